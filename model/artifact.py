"""Save and load the artifact directory: config.json + vocab.json + model.safetensors.

Weights are a safetensors `state_dict` (no pickle, so loading never runs code). config.json
records the sha256 of the weights and of the vocabulary; loading recomputes both and checks
that config, vocabulary and weights fit together before any model is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary

ARTIFACT_FORMAT, ARTIFACT_VERSION = "textclf-artifact", 1
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "model.safetensors"


class ArtifactError(Exception):
    """An artifact that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Artifact:
    path: Path
    model: LSTMClassifier  # in eval mode, on the requested device
    vocab: Vocabulary
    config: dict[str, Any]  # the whole config.json

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def version(self) -> str:
        return str(self.config["version"])

    @property
    def sha256(self) -> str:
        return str(self.config["weights"]["sha256"])

    @property
    def max_length(self) -> int:
        return int(self.config["tokenizer"]["max_length"])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_artifact(out_dir: Path, model: LSTMClassifier, vocab: Vocabulary, labels: list[str], *,
                  name: str, max_length: int, extra: dict[str, Any] | None = None) -> dict:
    """Write the three core files; returns the config written. `extra` (training settings, data
    provenance, vector coverage...) is merged into config.json as plain JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = safetensors.torch.save(state)
    (out_dir / WEIGHTS_FILE).write_bytes(weights)
    vocab_bytes = json.dumps(vocab.to_json(), ensure_ascii=False).encode("utf-8")
    (out_dir / VOCAB_FILE).write_bytes(vocab_bytes)
    digest = sha256_bytes(weights)
    created = datetime.now(UTC)
    config = {
        "format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION,
        "name": name, "version": f"{created:%Y%m%d.%H%M%S}-{digest[:8]}",
        "created": created.isoformat(timespec="seconds"),
        "labels": list(labels), "model": model.config.to_dict(),
        "tokenizer": {"normalization": "NFKC", "lowercase": vocab.lowercase,
                      "max_length": max_length, "vocab_file": VOCAB_FILE,
                      "vocab_size": len(vocab), "vocab_sha256": sha256_bytes(vocab_bytes)},
        "weights": {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": digest},
        "torch_version": torch.__version__, **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return config


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(path, "missing file") from None
    except OSError as exc:
        raise ArtifactError(path, f"cannot read: {exc.strerror}") from None


def read_config(path: Path) -> dict[str, Any]:
    """config.json, checked for format and version."""
    config_path = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise ArtifactError(path, "artifact directory does not exist")
    try:
        config = json.loads(_read(config_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(config_path, f"not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(config_path, f"not a {ARTIFACT_FORMAT} config")
    if config.get("format_version") != ARTIFACT_VERSION:
        raise ArtifactError(config_path, f"format_version {config.get('format_version')!r} is "
                                         f"not supported (this textclf reads {ARTIFACT_VERSION})")
    return config


def _load_vocab(path: Path, config: dict) -> Vocabulary:
    vocab_path = path / config["tokenizer"]["vocab_file"]
    raw = _read(vocab_path)
    if sha256_bytes(raw) != config["tokenizer"]["vocab_sha256"]:
        raise ArtifactError(vocab_path, "sha256 does not match config.json (file changed)")
    try:
        vocab = Vocabulary.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(vocab_path, f"invalid vocabulary ({exc})") from None
    if len(vocab) != config["model"]["vocab_size"]:
        raise ArtifactError(vocab_path, f"{len(vocab)} words but config.json model.vocab_size "
                                        f"is {config['model']['vocab_size']}")
    return vocab


def _load_model(path: Path, config: dict, device: torch.device) -> LSTMClassifier:
    weights_path = path / config["weights"]["file"]
    raw = _read(weights_path)
    if sha256_bytes(raw) != config["weights"]["sha256"]:
        raise ArtifactError(weights_path, "sha256 does not match config.json (tampered or "
                                          "truncated weights)")
    try:
        state = safetensors.torch.load(raw)
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(weights_path, f"not a safetensors file ({exc})") from None
    model = LSTMClassifier(ModelConfig.from_dict(config["model"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ArtifactError(weights_path, "weights do not fit config.json: "
                                          + " ".join(s.strip() for s in first)) from None
    return model.to(device).eval()


def load_artifact(path: Path | str, device: torch.device | str = "cpu") -> Artifact:
    """Load and cross-check an artifact; raises ArtifactError naming the offending file."""
    path = Path(path)
    config = read_config(path)
    config_path = path / CONFIG_FILE
    try:
        labels = config["labels"]
        if len(labels) != config["model"]["num_classes"] or len(set(labels)) != len(labels):
            raise ArtifactError(config_path, f"{len(labels)} labels (unique: {len(set(labels))}) "
                                             f"but model.num_classes is "
                                             f"{config['model']['num_classes']}")
        ModelConfig.from_dict(config["model"])
        vocab = _load_vocab(path, config)
        model = _load_model(path, config, torch.device(device))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(config_path, f"incomplete or invalid config ({exc!r})") from None
    return Artifact(path=path, model=model, vocab=vocab, config=config)

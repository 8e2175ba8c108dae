"""Ways to damage a model artifact, for the reload and start-up tests: each leaves a directory
that the loader must refuse, naming the file. Plus `point`, the atomic symlink swap."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from model.artifact import save_artifact
from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary


def config_of(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _writeconfig_of(path: Path, config: dict) -> None:
    (path / "config.json").write_text(json.dumps(config, indent=2))


def flip_byte(path: Path) -> None:
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _rehash_weights(path: Path) -> None:
    """Make config.json's sha256 match whatever model.safetensors now holds (a consistent-looking
    artifact whose content is wrong: only the later checks can catch it)."""
    config = config_of(path)
    config["weights"]["sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    _writeconfig_of(path, config)


def _mismatched_weights(path: Path) -> None:
    """Weights of a model with another hidden size, with a matching sha256."""
    vocab = Vocabulary.from_json(json.loads((path / "vocab.json").read_text()))
    other = path.parent / "other"
    save_artifact(other, LSTMClassifier(ModelConfig(vocab_size=len(vocab), num_classes=3,
                                                    embedding_dim=8, hidden_size=7)),
                  vocab, ["a", "b", "c"], name="other", max_length=16)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    _rehash_weights(path)


def _pickle_weights(path: Path) -> None:
    """A torch.save (pickle) file in place of the safetensors one, sha256 matching: must be
    refused as not safetensors, never unpickled."""
    torch.save({"embedding.weight": torch.zeros(2, 2)}, path / "model.safetensors")
    _rehash_weights(path)


def tamper_vocab(path: Path) -> None:
    vocab = json.loads((path / "vocab.json").read_text())
    vocab["words"].append("intruder")
    vocab["counts"].append(1)
    (path / "vocab.json").write_text(json.dumps(vocab))


def _vocab_size_mismatch(path: Path) -> None:
    tamper_vocab(path)
    config = config_of(path)
    config["tokenizer"]["vocab_sha256"] = hashlib.sha256((path / "vocab.json").read_bytes()).hexdigest()
    _writeconfig_of(path, config)


def _config_not_json(path: Path) -> None:
    (path / "config.json").write_text('{"format": "textclf-artifact", "version": ')


def _labels_mismatch(path: Path) -> None:
    config = config_of(path)
    config["labels"] = config["labels"][:2]
    _writeconfig_of(path, config)


def _weights_missing(path: Path) -> None:
    (path / "model.safetensors").unlink()


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (damage, file the error must name, words it must contain)
    "weights_flipped_byte": (flip_byte, "model.safetensors", "sha256"),
    "weights_truncated": (_truncate, "model.safetensors", "sha256"),
    "weights_wrong_shape": (_mismatched_weights, "model.safetensors", "do not fit"),
    "weights_pickle": (_pickle_weights, "model.safetensors", "not a safetensors"),
    "weights_missing": (_weights_missing, "model.safetensors", "missing"),
    "vocab_tampered": (tamper_vocab, "vocab.json", "sha256"),
    "vocab_size_mismatch": (_vocab_size_mismatch, "vocab.json", "vocab_size"),
    "config_not_json": (_config_not_json, "config.json", "JSON"),
    "labels_mismatch": (_labels_mismatch, "config.json", "num_classes"),
}


def point(link: Path, target: Path) -> None:
    """Swap the symlink in one rename, so a reload never sees half an artifact."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)

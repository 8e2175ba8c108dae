import json
import re
from pathlib import Path

import pytest
import torch

from model.artifact import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, ArtifactError, load_artifact
from tests.conftest import LABELS, build_artifact

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_gives_the_same_model(tmp_path):
    path = build_artifact(tmp_path / "a")
    artifact = load_artifact(path)
    again = load_artifact(path)
    ids, lengths = artifact.vocab.encode_batch(["the team won", "shares fell"])
    with torch.no_grad():
        torch.testing.assert_close(artifact.model(ids, lengths), again.model(ids, lengths))
    assert artifact.labels == LABELS
    assert artifact.sha256 == json.loads((path / CONFIG_FILE).read_text())["weights"]["sha256"]
    assert not artifact.model.training


def test_weights_are_safetensors_not_pickle(tmp_path):
    path = build_artifact(tmp_path / "a")
    header = (path / WEIGHTS_FILE).read_bytes()[:8]
    assert int.from_bytes(header, "little") > 0  # safetensors: u64 header length, no pickle opcodes
    assert b"\x80\x04" not in (path / WEIGHTS_FILE).read_bytes()[:16]


def test_tampered_weights_are_refused(tmp_path):
    path = build_artifact(tmp_path / "a")
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 does not match"):
        load_artifact(path)


def test_truncated_weights_are_refused(tmp_path):
    path = build_artifact(tmp_path / "a")
    (path / WEIGHTS_FILE).write_bytes((path / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_artifact(path)


def test_vocab_from_another_artifact_is_refused(tmp_path):
    path = build_artifact(tmp_path / "a")
    (path / VOCAB_FILE).write_text((path / VOCAB_FILE).read_text().replace('"the"', '"THE"'))
    with pytest.raises(ArtifactError, match="vocab.json: sha256"):
        load_artifact(path)


def test_config_that_does_not_fit_the_weights_is_refused(tmp_path):
    path = build_artifact(tmp_path / "a")
    config = json.loads((path / CONFIG_FILE).read_text())
    config["model"]["hidden_size"] = 7
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="weights do not fit config.json"):
        load_artifact(path)


def test_labels_must_match_the_output_layer(tmp_path):
    path = build_artifact(tmp_path / "a")
    config = json.loads((path / CONFIG_FILE).read_text())
    config["labels"] = config["labels"][:2]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="2 labels"):
        load_artifact(path)


@pytest.mark.parametrize("problem", ["missing_dir", "missing_config", "bad_json", "wrong_format"])
def test_unusable_config_names_the_file(tmp_path, problem):
    path = build_artifact(tmp_path / "a")
    if problem == "missing_dir":
        path = tmp_path / "nowhere"
    elif problem == "missing_config":
        (path / CONFIG_FILE).unlink()
    elif problem == "bad_json":
        (path / CONFIG_FILE).write_text("{not json")
    else:
        (path / CONFIG_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError) as info:
        load_artifact(path)
    assert str(path) in str(info.value)


def test_missing_weights_file(tmp_path):
    path = build_artifact(tmp_path / "a")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match="model.safetensors: missing file"):
        load_artifact(path)


def test_nothing_on_the_load_path_unpickles() -> None:
    """Weights are safetensors and JSON only: no pickle, no torch.load without weights_only."""
    offenders = []
    for package in ("model", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for lineno, line in enumerate(source.splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(r"\b(import\s+pickle|from\s+pickle|pickle\.|cPickle|dill|joblib)\b",
                             code) or "allow_pickle=True" in code:  # np.load refuses by default
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
            for call in re.finditer(r"(?<![\w.])torch\.load\(", source):  # not safetensors.torch
                args = source[call.end(): source.find(")", call.end()) + 1]
                if "weights_only=True" not in args:
                    lineno = source.count("\n", 0, call.start()) + 1
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: torch.load without "
                                     "weights_only=True")
    assert not offenders, "\n".join(offenders)

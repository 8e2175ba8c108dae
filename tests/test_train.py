import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from model.artifact import load_artifact

ARTIFACT_FILES = {"config.json", "vocab.json", "model.safetensors", "metrics.json",
                  "training_curves.png", "confusion_matrix.png", "README.md"}


def write_csv(path, rows):
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")


def toy_rows(n=24):
    words = {"sport": "goal match team win", "tech": "chip phone software code"}
    return [(f"{words[y]} {i}", y) for i in range(n) for y in words]


def train(tmp_path, out, *extra):
    csv = tmp_path / "train.csv"
    write_csv(csv, toy_rows())
    cmd = [sys.executable, "-m", "model.train", "--train", str(csv), "--out", str(out),
           "--epochs", "2", "--batch-size", "8", "--embedding-dim", "8", "--hidden-size", "8",
           "--device", "cpu", "--no-progress", "--threads", "1", "--embeddings", "none", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_dry_run_on_a_named_dataset_writes_a_complete_artifact(tmp_path):
    out = tmp_path / "art"
    run = subprocess.run([sys.executable, "-m", "model.train", "--dataset", "bbc", "--out", str(out),
                          "--dry-run", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert {p.name for p in out.iterdir()} >= ARTIFACT_FILES
    artifact = load_artifact(out)
    assert artifact.labels == ["business", "entertainment", "politics", "sports", "tech"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= metrics.keys()
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch   1" in run.stdout + run.stderr


def test_same_seed_same_weights(tmp_path):
    for name in ("a", "b"):
        assert train(tmp_path, tmp_path / name, "--seed", "3").returncode == 0
    first, second = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = train(tmp_path, tmp_path / "c", "--seed", "4")
    assert other.returncode == 0
    third = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_frozen_pretrained_vectors_stay_put(tmp_path):
    vectors = tmp_path / "vec.txt"
    vectors.write_text("goal 1 0 0 0\nchip 0 1 0 0\nmatch 0 0 1 0\n", encoding="utf-8")
    run = train(tmp_path, tmp_path / "art", "--embeddings", str(vectors), "--freeze-embeddings",
                "--min-freq", "1")
    assert run.returncode == 0, run.stderr
    artifact = load_artifact(tmp_path / "art")
    weight = artifact.model.embedding.weight
    torch.testing.assert_close(weight[artifact.vocab.lookup("chip")], torch.tensor([0.0, 1, 0, 0]))
    config = json.loads((tmp_path / "art" / "config.json").read_text())
    assert config["embeddings"]["frozen"] is True
    assert config["embeddings"]["coverage"]["found"] == 3
    assert config["model"]["embedding_dim"] == 4  # taken from the vectors


def test_bad_data_gives_a_clear_error_and_exit_code(tmp_path):
    csv = tmp_path / "one.csv"
    write_csv(csv, [("a b", "x"), ("c d", "x")])
    run = subprocess.run([sys.executable, "-m", "model.train", "--train", str(csv), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "one.csv" in run.stderr


def test_cuda_requested_without_gpu_is_refused(tmp_path):
    if torch.cuda.is_available():
        return
    run = train(tmp_path, tmp_path / "o", "--device", "cuda:3")
    assert run.returncode == 2
    assert "not available" in run.stderr

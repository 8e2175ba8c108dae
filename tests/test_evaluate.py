import json
import subprocess
import sys

from model.report import classification_metrics, confusion_matrix
from tests.conftest import CORPUS, LABELS, build_artifact


def test_metrics_by_hand():
    labels = ["a", "b", "c"]
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], labels)
    assert metrics["accuracy"] == 3 / 5
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["per_class"]["b"] == {"precision": round(2 / 3, 4), "recall": 1.0,
                                         "f1": 0.8, "support": 2}
    # macro-F1 = mean(F1 a=0.5, b=0.8, c=0)
    assert abs(metrics["macro_f1"] - (0.5 + 0.8 + 0.0) / 3) < 1e-9
    assert confusion_matrix([2], [2], 3)[2, 2] == 1


def test_evaluate_cli_prints_metrics_json(tmp_path):
    artifact = build_artifact(tmp_path / "art")
    test_file = tmp_path / "test.jsonl"
    rows = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(CORPUS)]
    test_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "model.evaluate", "--artifact", str(artifact),
                          "--test", str(test_file), "--device", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    assert metrics["num_examples"] == len(CORPUS)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == len(CORPUS)
    assert metrics["labels"] == LABELS


def test_evaluate_refuses_labels_the_model_does_not_know(tmp_path):
    artifact = build_artifact(tmp_path / "art")
    test_file = tmp_path / "t.csv"
    test_file.write_text("text,label\nhello,weather\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "model.evaluate", "--artifact", str(artifact),
                          "--test", str(test_file)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "weather" in run.stderr


def test_evaluate_tampered_artifact_exits_2(tmp_path):
    artifact = build_artifact(tmp_path / "art")
    (artifact / "model.safetensors").write_bytes(b"junk")
    run = subprocess.run([sys.executable, "-m", "model.evaluate", "--artifact", str(artifact),
                          "--dataset", "r8"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "model.safetensors" in run.stderr

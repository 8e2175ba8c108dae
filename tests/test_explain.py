"""model.explain: the explanation dict (tokens, offsets, gates, attributions), its errors and
the CLI, on the toy sentiment model. Gates: test_gates.py; attributions: test_attribution.py;
table and heatmap: test_explain_render.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.explain import ExplainError, explain

ROOT = Path(__file__).resolve().parents[1]


def test_explanation_shape_keys_and_offsets(toy_artifact) -> None:
    text = "  The MOVIE was   grëat, zzzunknown!"
    exp = explain(toy_artifact, text, detail=True)
    json.dumps(exp)
    assert exp["method"] == "integrated_gradients"
    assert exp["label"] == exp["target"] == exp["probabilities"][0]["label"]
    assert abs(sum(p["score"] for p in exp["probabilities"]) - 1) < 1e-5
    assert exp["score"] == exp["probabilities"][0]["score"]
    assert set(exp["completeness"]) >= {"sum_attributions", "score_difference", "abs_error"}
    assert [t["text"] for t in exp["tokens"]] == ["the", "movie", "was", "grëat", ",",
                                                  "zzzunknown", "!"]
    for tok in exp["tokens"]:
        assert text[tok["start"]: tok["stop"]].lower() == tok["text"]
        assert tok["unk"] == (tok["id"] == 1)
        assert [(g["layer"], g["direction"]) for g in tok["gates"]] == [
            (0, "forward"), (0, "backward"), (1, "forward"), (1, "backward")]
        for g in tok["gates"]:
            assert 0 <= g["forget_gate"] <= 1 and g["cell_norm"] >= 0
            assert all(len(g[k]) == 12 for k in ("input", "forget", "output", "candidate",
                                                  "cell", "hidden"))
    assert exp["tokens"][5]["unk"]
    summed = sum(t["attribution"] for t in exp["tokens"])
    assert abs(summed - exp["completeness"]["sum_attributions"]) < 1e-5


def test_explanation_occlusion_and_target(toy_artifact) -> None:
    exp = explain(toy_artifact, "the movie was great", target="negative", method="occlusion")
    assert exp["target"] == "negative" and exp["label"] == "positive"
    assert "completeness" not in exp
    assert "input" not in exp["tokens"][0]["gates"][0]  # no detail by default
    assert exp["tokens"][3]["attribution"] < 0


def test_long_text_is_truncated_to_max_length(toy_artifact) -> None:
    exp = explain(toy_artifact, " ".join(["good"] * 20))  # toy_artifact max_length is 12
    assert exp["num_tokens"] == 12 and exp["truncated"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"text": "good", "target": "neutral"}, "labels are: negative, positive"),
    ({"text": ""}, "no tokens"),
    ({"text": "   \n "}, "no tokens"),
    ({"text": "a b c d e f", "max_tokens": 5}, "6 tokens, more than the 5"),
    ({"text": "good", "method": "lime"}, "unknown method"),
    ({"text": "good", "steps": 0}, "steps"),
    ({"text": "good", "rule": "simpson"}, "unknown rule"),
])
def test_explain_errors(toy_artifact, kwargs: dict, message: str) -> None:
    with pytest.raises(ExplainError, match=message):
        explain(toy_artifact, **kwargs)
    assert issubclass(ExplainError, ValueError)


# --- CLI --------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.explain", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_table_png_and_json(toy_artifact_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "heat.png"
    done = _cli("--artifact", str(toy_artifact_dir), "--png", str(png), "the movie was great")
    assert done.returncode == 0, done.stderr
    for word in ("the", "movie", "was", "great", "completeness", "L0 fwd"):
        assert word in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = _cli("--artifact", str(toy_artifact_dir), "--json", "--method", "occlusion",
                "--target", "negative", "awful plot")
    assert done.returncode == 0, done.stderr
    exp = json.loads(done.stdout)
    assert exp["method"] == "occlusion" and [t["text"] for t in exp["tokens"]] == ["awful", "plot"]


def test_cli_errors(toy_artifact_dir: Path) -> None:
    done = _cli("--artifact", str(toy_artifact_dir), "--target", "neutral", "good")
    assert done.returncode == 2 and "labels are: negative, positive" in done.stderr
    done = _cli("--artifact", str(toy_artifact_dir / "missing"), "good")
    assert done.returncode == 2 and "does not exist" in done.stderr

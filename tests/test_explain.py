"""Gate recomputation, attributions and the explanation dict / CLI (model.gates,
model.attribution, model.explain). CPU only, a few seconds."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.artifact import load_artifact, save_artifact
from model.attribution import integrated_gradients, occlusion, quadrature
from model.explain import ExplainError, explain, format_table
from model.gates import trace_batch, trace_lstm
from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
GATE_TOL = 1e-5
# Completeness |sum(attributions) - (logit(x) - logit(baseline))| / max(1, |difference|), measured
# on this file's toy model (Adam-trained: saturated, the logit drops by ~9 within 4% of the path)
# over 86 texts x 2 targets with 64 steps: adaptive <= 8.5e-3, gauss_legendre up to 0.36,
# trapezoid up to 1.2; on the texts below adaptive 64 <= 2.3e-3.
IG_STEPS, IG_TOL = 64, 1e-2

POSITIVE = ["good", "great", "excellent", "love", "nice"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "poor"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "it", "this", "really", "story"]


def _toy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.choices(FILLER, k=rng.randint(2, 7))
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice((NEGATIVE, POSITIVE)[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def _train_toy(config: dict, steps: int = 60) -> tuple[LSTMClassifier, Vocabulary]:
    torch.manual_seed(0)
    texts, labels = _toy_corpus(256)
    vocab = Vocabulary.build(texts)
    model = LSTMClassifier(ModelConfig(vocab_size=len(vocab), num_classes=2, **config))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    y = torch.tensor(labels)
    for step in range(steps):
        rows = torch.arange(32 * step, 32 * step + 32) % len(texts)
        ids, lengths = vocab.encode_batch([texts[i] for i in rows])
        loss = nn.functional.cross_entropy(model(ids, lengths), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"embedding_dim": 16, "hidden_size": 12, "num_layers": 2, "bidirectional": True,
              "dropout": 0.1, "pooling": "max"}
    model, vocab = _train_toy(config)
    out = tmp_path_factory.mktemp("artifact")
    save_artifact(out, model, vocab, ["negative", "positive"], name="toy", max_length=12)
    return out


@pytest.fixture(scope="module")
def artifact(artifact_dir: Path):
    return load_artifact(artifact_dir)


def _packed_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=lstm.batch_first, enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=lstm.batch_first, total_length=x.shape[1])
    return out, h_n, c_n


# --- gate recomputation -----------------------------------------------------------------------

@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_lstm_matches_nn_lstm(num_layers: int, bidirectional: bool) -> None:
    torch.manual_seed(num_layers * 10 + bidirectional)
    lstm = nn.LSTM(6, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                   dropout=0.5 if num_layers > 1 else 0.0).eval()
    lengths = torch.tensor([9, 3, 1, 6])
    x = torch.randn(4, 9, 6)
    x[1, 3:] = 100.0  # garbage in the padding must not matter
    with torch.no_grad():
        expected = _packed_lstm(lstm, x, lengths)
        got = trace_batch(lstm, x, lengths)
    for want, have in zip(expected, got, strict=True):
        assert want.shape == have.shape
        assert (want - have).abs().max() < GATE_TOL


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("grad", [False, True])  # packed LSTM / the unpacked inference path
def test_reference_lstm_matches_classifier_encode(num_layers: int, bidirectional: bool,
                                                  grad: bool) -> None:
    torch.manual_seed(3)
    model = LSTMClassifier(ModelConfig(vocab_size=30, num_classes=3, embedding_dim=8,
                                       hidden_size=7, num_layers=num_layers,
                                       bidirectional=bidirectional)).eval()
    ids = torch.randint(2, 30, (3, 8))
    lengths = torch.tensor([8, 6, 8])  # little padding: inference takes the unpacked LSTM
    with torch.set_grad_enabled(grad):
        states, h_n = model.encode(ids, lengths)
    with torch.no_grad():
        ids[1, 6:] = 0
        ref_states, ref_h_n, _ = trace_batch(model.lstm, model.embedding(ids), lengths)
    assert (states - ref_states).abs().max() < GATE_TOL
    assert (h_n - ref_h_n).abs().max() < GATE_TOL


def test_gate_trace_is_consistent(artifact) -> None:
    """Gates in range; c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t); backward is in token order."""
    model = artifact.model
    ids = torch.tensor(artifact.vocab.encode("the movie was great"))
    with torch.no_grad():
        trace = trace_lstm(model.lstm, model.embedding(ids))
    assert len(trace.directions) == 4
    for d in trace.directions:
        for gate in (d.input, d.forget, d.output):
            assert gate.min() >= 0 and gate.max() <= 1
        prev = torch.zeros_like(d.cell[0])
        order = range(len(ids)) if d.direction == "forward" else reversed(range(len(ids)))
        for t in order:
            assert torch.allclose(d.cell[t], d.forget[t] * prev + d.input[t] * d.candidate[t])
            assert torch.allclose(d.hidden[t], d.output[t] * torch.tanh(d.cell[t]))
            prev = d.cell[t]


def test_reference_lstm_matches_trained_artifact(artifact) -> None:
    model, vocab = artifact.model, artifact.vocab
    texts = ["the movie was great", "awful", "this really was a terrible terrible story", "it"]
    ids, lengths = vocab.encode_batch(texts)
    with torch.no_grad():
        states, h_n = model.encode(ids, lengths)
        _, _, c_n = _packed_lstm(model.lstm, model.embedding(ids), lengths)
        ref_states, ref_h_n, ref_c_n = trace_batch(model.lstm, model.embedding(ids), lengths)
    assert (states - ref_states).abs().max() < GATE_TOL
    assert (h_n - ref_h_n).abs().max() < GATE_TOL
    assert (c_n - ref_c_n).abs().max() < GATE_TOL


# --- attributions -----------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["gauss_legendre", "trapezoid"])
def test_quadrature_weights(rule: str) -> None:
    nodes, weights = quadrature(16, rule)
    assert abs(weights.sum() - 1) < 1e-12
    assert nodes.min() >= 0 and nodes.max() <= 1
    assert abs((weights * nodes**2).sum() - 1 / 3) < (1e-12 if rule == "gauss_legendre" else 1e-3)


TEXTS = ["the movie was great", "awful plot", "a good film , bad story",
         "The movie was great, zzz!"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("target", [0, 1])
def test_integrated_gradients_completeness(artifact, text: str, target: int) -> None:
    ids = torch.tensor(artifact.vocab.encode(text))
    result = integrated_gradients(artifact.model, ids, target, steps=IG_STEPS)
    assert result.rule == "adaptive" and result.evaluations == IG_STEPS
    assert result.attributions.shape == ids.shape
    assert result.abs_error < IG_TOL * max(1.0, abs(result.score_difference))
    with torch.no_grad():
        logits = artifact.model(ids[None], torch.tensor([len(ids)]))[0]
        baseline = artifact.model(torch.zeros_like(ids)[None], torch.tensor([len(ids)]))[0]
    assert abs(result.score - float(logits[target])) < 1e-5
    assert abs(result.baseline_score - float(baseline[target])) < 1e-5


@pytest.mark.parametrize("rule", ["gauss_legendre", "trapezoid"])
def test_fixed_rules_converge(artifact, rule: str) -> None:
    """The fixed grids reach completeness too, with enough steps (the integral is right)."""
    ids = torch.tensor(artifact.vocab.encode("The movie was great, zzz!"))
    result = integrated_gradients(artifact.model, ids, 0, steps=1000, rule=rule, batch_size=500)
    assert result.abs_error < 2e-3 * max(1.0, abs(result.score_difference))


def test_adaptive_beats_fixed_grids_where_the_model_saturates(artifact) -> None:
    """The worst text of the measurement above: the target logit falls by ~9 between 8% and
    12% of the path. Measured abs errors at 64 steps: adaptive 0.08, Gauss-Legendre 3.4,
    trapezoid 11.2 (score difference -9.7)."""
    ids = torch.tensor(artifact.vocab.encode("good story film film a story film great was"))
    errors = {rule: integrated_gradients(artifact.model, ids, 0, steps=64, rule=rule)
              for rule in ("adaptive", "gauss_legendre", "trapezoid")}
    adaptive = errors.pop("adaptive")
    assert adaptive.abs_error < IG_TOL * max(1.0, abs(adaptive.score_difference))
    assert all(adaptive.abs_error * 10 < other.abs_error for other in errors.values())


def test_integrated_gradients_inside_inference_mode(artifact) -> None:
    with torch.inference_mode():
        exp = explain(artifact, "the movie was great")
    assert exp["completeness"]["abs_error"] < IG_TOL * max(
        1.0, abs(exp["completeness"]["score_difference"]))
    assert all(p.grad is None for p in artifact.model.parameters())


def test_sentiment_words_get_the_credit(artifact) -> None:
    """On the toy model, the sentiment word carries the decision in both methods."""
    ids = torch.tensor(artifact.vocab.encode("the movie was great"))
    for target, sign in ((1, 1), (0, -1)):
        occ, p = occlusion(artifact.model, ids, target)
        assert sign * occ[3] > 0
        assert occ[3].abs() == occ.abs().max()
        ig = integrated_gradients(artifact.model, ids, target, steps=IG_STEPS).attributions
        assert sign * ig[3] > 0
        assert ig[3].abs() == ig.abs().max()
    assert p < 0.5  # p(negative | "the movie was great")


def test_occlusion_matches_manual_replacement(artifact) -> None:
    vocab, model = artifact.vocab, artifact.model
    ids = torch.tensor(vocab.encode("awful plot really"))
    occ, p = occlusion(model, ids, 0)
    replaced = ids.clone()
    replaced[0] = 0
    with torch.no_grad():
        q = model(replaced[None], torch.tensor([3])).softmax(-1)[0, 0]
    assert abs(float(occ[0]) - (p - float(q))) < 1e-6


# --- explanation dict -------------------------------------------------------------------------

def test_explanation_shape_keys_and_offsets(artifact) -> None:
    text = "  The MOVIE was   grëat, zzzunknown!"
    exp = explain(artifact, text, detail=True)
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


def test_explanation_occlusion_and_target(artifact) -> None:
    exp = explain(artifact, "the movie was great", target="negative", method="occlusion")
    assert exp["target"] == "negative" and exp["label"] == "positive"
    assert "completeness" not in exp
    assert "input" not in exp["tokens"][0]["gates"][0]  # no detail by default
    assert exp["tokens"][3]["attribution"] < 0


def test_long_text_is_truncated_to_max_length(artifact) -> None:
    exp = explain(artifact, " ".join(["good"] * 20))  # artifact max_length is 12
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
def test_explain_errors(artifact, kwargs: dict, message: str) -> None:
    with pytest.raises(ExplainError, match=message):
        explain(artifact, **kwargs)
    assert issubclass(ExplainError, ValueError)


def test_format_table_lists_tokens(artifact) -> None:
    table = format_table(explain(artifact, "The plot was awful, zzz", method="occlusion"))
    for word in ("the", "plot", "was", "awful", "zzz*", "L1 bwd", "forget", "prediction"):
        assert word in table


# --- CLI --------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.explain", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_table_png_and_json(artifact_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "heat.png"
    done = _cli("--artifact", str(artifact_dir), "--png", str(png), "the movie was great")
    assert done.returncode == 0, done.stderr
    for word in ("the", "movie", "was", "great", "completeness", "L0 fwd"):
        assert word in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = _cli("--artifact", str(artifact_dir), "--json", "--method", "occlusion",
                "--target", "negative", "awful plot")
    assert done.returncode == 0, done.stderr
    exp = json.loads(done.stdout)
    assert exp["method"] == "occlusion" and [t["text"] for t in exp["tokens"]] == ["awful", "plot"]


def test_cli_errors(artifact_dir: Path) -> None:
    done = _cli("--artifact", str(artifact_dir), "--target", "neutral", "good")
    assert done.returncode == 2 and "labels are: negative, positive" in done.stderr
    done = _cli("--artifact", str(artifact_dir / "missing"), "good")
    assert done.returncode == 2 and "does not exist" in done.stderr

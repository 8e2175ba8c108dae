"""model.attribution: quadrature rules, integrated gradients (completeness, convergence, the
adaptive grid), occlusion, on the toy sentiment model."""

from __future__ import annotations

import pytest
import torch

from model.attribution import integrated_gradients, occlusion, quadrature
from model.explain import explain

# Completeness |sum(attributions) - (logit(x) - logit(baseline))| / max(1, |difference|), measured
# on the toy model (tests/toy_sentiment.py; Adam-trained: saturated, the logit drops by ~9
# within 4% of the path) over 86 texts x 2 targets with 64 steps: adaptive <= 8.5e-3,
# gauss_legendre up to 0.36, trapezoid up to 1.2; on the texts below adaptive 64 <= 2.3e-3.
IG_STEPS, IG_TOL = 64, 1e-2


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
def test_integrated_gradients_completeness(toy_artifact, text: str, target: int) -> None:
    ids = torch.tensor(toy_artifact.vocab.encode(text))
    result = integrated_gradients(toy_artifact.model, ids, target, steps=IG_STEPS)
    assert result.rule == "adaptive" and result.evaluations == IG_STEPS
    assert result.attributions.shape == ids.shape
    assert result.abs_error < IG_TOL * max(1.0, abs(result.score_difference))
    with torch.no_grad():
        logits = toy_artifact.model(ids[None], torch.tensor([len(ids)]))[0]
        baseline = toy_artifact.model(torch.zeros_like(ids)[None], torch.tensor([len(ids)]))[0]
    assert abs(result.score - float(logits[target])) < 1e-5
    assert abs(result.baseline_score - float(baseline[target])) < 1e-5


@pytest.mark.parametrize("rule", ["gauss_legendre", "trapezoid"])
def test_fixed_rules_converge(toy_artifact, rule: str) -> None:
    """The fixed grids reach completeness too, with enough steps (the integral is right)."""
    ids = torch.tensor(toy_artifact.vocab.encode("The movie was great, zzz!"))
    result = integrated_gradients(toy_artifact.model, ids, 0, steps=1000, rule=rule, batch_size=500)
    assert result.abs_error < 2e-3 * max(1.0, abs(result.score_difference))


def test_adaptive_beats_fixed_grids_where_the_model_saturates(toy_artifact) -> None:
    """The worst text of the measurement above: the target logit falls by ~9 between 8% and
    12% of the path. Measured abs errors at 64 steps: adaptive 0.08, Gauss-Legendre 3.4,
    trapezoid 11.2 (score difference -9.7)."""
    ids = torch.tensor(toy_artifact.vocab.encode("good story film film a story film great was"))
    errors = {rule: integrated_gradients(toy_artifact.model, ids, 0, steps=64, rule=rule)
              for rule in ("adaptive", "gauss_legendre", "trapezoid")}
    adaptive = errors.pop("adaptive")
    assert adaptive.abs_error < IG_TOL * max(1.0, abs(adaptive.score_difference))
    assert all(adaptive.abs_error * 10 < other.abs_error for other in errors.values())


def test_integrated_gradients_inside_inference_mode(toy_artifact) -> None:
    with torch.inference_mode():
        exp = explain(toy_artifact, "the movie was great")
    assert exp["completeness"]["abs_error"] < IG_TOL * max(
        1.0, abs(exp["completeness"]["score_difference"]))
    assert all(p.grad is None for p in toy_artifact.model.parameters())


def test_sentiment_words_get_the_credit(toy_artifact) -> None:
    """On the toy model, the sentiment word carries the decision in both methods."""
    ids = torch.tensor(toy_artifact.vocab.encode("the movie was great"))
    for target, sign in ((1, 1), (0, -1)):
        occ, p = occlusion(toy_artifact.model, ids, target)
        assert sign * occ[3] > 0
        assert occ[3].abs() == occ.abs().max()
        ig = integrated_gradients(toy_artifact.model, ids, target, steps=IG_STEPS).attributions
        assert sign * ig[3] > 0
        assert ig[3].abs() == ig.abs().max()
    assert p < 0.5  # p(negative | "the movie was great")


def test_occlusion_matches_manual_replacement(toy_artifact) -> None:
    vocab, model = toy_artifact.vocab, toy_artifact.model
    ids = torch.tensor(vocab.encode("awful plot really"))
    occ, p = occlusion(model, ids, 0)
    replaced = ids.clone()
    replaced[0] = 0
    with torch.no_grad():
        q = model(replaced[None], torch.tensor([3])).softmax(-1)[0, 0]
    assert abs(float(occ[0]) - (p - float(q))) < 1e-6

"""Per-token attributions of an `LSTMClassifier` decision: integrated gradients and occlusion.

Both methods compare the text with the same reference, the `<pad>` embedding (the all-zero
vector: `padding_idx=0` keeps that row at zero during training):

* integrated gradients (Sundararajan et al. 2017) integrates the gradient of the target *logit*
  along the straight path x' + a (x - x'), a in [0, 1], from the baseline (every token replaced
  by `<pad>`) to the text; attribution of token t = sum_e (x - x')_te * mean-gradient_te. The
  attributions sum to logit(x) - logit(x') up to the quadrature error, which `IGResult` reports.
  Trained LSTMs saturate: along the path the logit often changes by most of its range within a
  few percent of a (slopes of 1000 measured on a small model), which fixed grids miss. The
  default rule, "adaptive", therefore starts from a coarse uniform grid and repeatedly bisects
  the intervals whose trapezoid estimate disagrees most with the exact change of the logit
  there (every gradient evaluation also gives the logit, so the local error is known exactly);
  "gauss_legendre" and "trapezoid" are the fixed rules.
* occlusion replaces one token at a time by `<pad>` (the text keeps its length and every other
  token keeps its position) and reports p(target | text) - p(target | occluded text). Replacing
  rather than deleting keeps the token's slot, so what is measured is the token's content and
  not a shift of the following tokens or, for mean pooling, a different divisor; it also matches
  the integrated-gradients baseline. Positive = the token supports the target in both methods.

Gradients need autograd: everything here runs with `torch.inference_mode(False)` and grad
enabled, and with cuDNN off on CUDA, since cuDNN's LSTM backward only runs in training mode and
the model must stay in eval mode (dropout off, and it is shared with the predictor). Only
`torch.autograd.grad` w.r.t. the embeddings is used: parameters' `.grad` are never written.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from model.network import LSTMClassifier
from model.tokenizer import PAD_ID

RULES = ("adaptive", "gauss_legendre", "trapezoid")


@dataclass
class IGResult:
    attributions: torch.Tensor  # (T,) per-token attribution
    score: float                # target logit of the text
    baseline_score: float       # target logit of the all-<pad> baseline
    steps: int                  # as requested
    rule: str
    evaluations: int            # gradient evaluations (points on the path) actually used

    @property
    def sum_attributions(self) -> float:
        return float(self.attributions.sum())

    @property
    def score_difference(self) -> float:
        return self.score - self.baseline_score

    @property
    def abs_error(self) -> float:
        return abs(self.sum_attributions - self.score_difference)

    @property
    def rel_error(self) -> float:
        return self.abs_error / max(abs(self.score_difference), 1e-12)


_CUDNN_SWITCH = threading.Lock()  # cuDNN on/off is process-wide: one gradient pass at a time


@contextlib.contextmanager
def gradients_enabled(device: torch.device) -> Iterator[None]:
    """Autograd on even inside `torch.inference_mode()` / `no_grad()`. On CUDA also cuDNN off,
    which is a process-wide switch: while it is off, other CUDA forward passes (the predictor's)
    use PyTorch's own LSTM kernels, slower but with the same results."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        if device.type == "cuda":
            stack.enter_context(_cudnn_disabled())
        yield


@contextlib.contextmanager
def _cudnn_disabled() -> Iterator[None]:
    """Only the `enabled` flag (`torch.backends.cudnn.flags()` would reset benchmark & co.)."""
    with _CUDNN_SWITCH:
        before = torch.backends.cudnn.enabled
        torch.backends.cudnn.enabled = False
        try:
            yield
        finally:
            torch.backends.cudnn.enabled = before


def quadrature(steps: int, rule: str = "gauss_legendre") -> tuple[np.ndarray, np.ndarray]:
    """Fixed nodes a in [0, 1] and weights summing to 1 (steps >= 1).
    gauss_legendre: `steps` nodes; trapezoid: `steps` intervals, steps + 1 nodes."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
        return (nodes + 1) / 2, weights / 2
    if rule == "trapezoid":
        return np.linspace(0.0, 1.0, steps + 1), trapezoid_weights(np.linspace(0.0, 1.0, steps + 1))
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def trapezoid_weights(nodes: np.ndarray) -> np.ndarray:
    """Weights of the composite trapezoid rule on sorted nodes from 0 to 1 (any spacing)."""
    widths = np.diff(nodes)  # (n-1,)
    weights = np.zeros(len(nodes))
    weights[:-1] += widths / 2
    weights[1:] += widths / 2
    return weights


def _embed(model: LSTMClassifier, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (T,) -> the text's embeddings x (T, E) and the <pad> baseline x' (T, E)."""
    weight = model.embedding.weight.detach()
    return weight[ids], weight[PAD_ID].expand(ids.shape[0], -1)


def _logits(model: LSTMClassifier, embedded: torch.Tensor) -> torch.Tensor:
    """embedded (N, T, E), all of full length T -> logits (N, C)."""
    n, t = embedded.shape[:2]
    ids = torch.zeros(n, t, dtype=torch.long, device=embedded.device)  # only its shape is used
    lengths = torch.full((n,), t, dtype=torch.long)
    return model(ids, lengths, embedded=embedded)


class _Path:
    """The straight path from the baseline to the text, for one target logit."""

    def __init__(self, model: LSTMClassifier, ids: torch.Tensor, target: int,
                 batch_size: int) -> None:
        self.model, self.target, self.batch_size = model, target, batch_size
        self.x, self.baseline = _embed(model, ids)  # (T, E) each
        self.delta = self.x - self.baseline          # (T, E)

    def __call__(self, alphas: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Logit F(a) (n,) and per-token terms of dF/da, (x - x')_t . grad_t F, (n, T)."""
        scores, terms = [], []
        for lo in range(0, len(alphas), self.batch_size):
            a = torch.tensor(alphas[lo: lo + self.batch_size], dtype=self.x.dtype,
                             device=self.x.device)
            point = (self.baseline + a[:, None, None] * self.delta).requires_grad_(True)
            score = _logits(self.model, point)[:, self.target]  # (n,)
            (grad,) = torch.autograd.grad(score.sum(), point)   # (n, T, E)
            scores.append(score.detach().double().cpu().numpy())
            terms.append((grad * self.delta).sum(-1).detach())   # (n, T)
        return np.concatenate(scores), torch.cat(terms)


def _adaptive(path: _Path, budget: int) -> tuple[np.ndarray, torch.Tensor]:
    """Nodes (n,) and terms (n, T): bisect where |change of F - trapezoid estimate| is largest."""
    nodes = np.linspace(0.0, 1.0, max(1, budget // 8) + 1)
    scores, terms = path(nodes)
    while len(nodes) < budget:
        widths = np.diff(nodes)                                  # (n-1,)
        slope = terms.sum(1).double().cpu().numpy()              # (n,) dF/da
        local = np.abs(np.diff(scores) - widths * (slope[1:] + slope[:-1]) / 2)  # (n-1,)
        count = min(budget - len(nodes), -(-len(widths) // 4))   # split a quarter per round
        split = np.argsort(-local, kind="stable")[:count]
        new = nodes[split] + widths[split] / 2
        new_scores, new_terms = path(new)
        order = np.argsort(np.concatenate([nodes, new]), kind="stable")
        nodes = np.concatenate([nodes, new])[order]
        scores = np.concatenate([scores, new_scores])[order]
        terms = torch.cat([terms, new_terms])[torch.as_tensor(order, device=terms.device)]
    return nodes, terms


def integrated_gradients(model: LSTMClassifier, ids: torch.Tensor, target: int, steps: int = 64,
                         rule: str = "adaptive", batch_size: int = 64) -> IGResult:
    """Integrated gradients of logit[target] for one text, ids (T,) on the model's device.
    `steps`: path points for "adaptive" and "gauss_legendre", intervals for "trapezoid"."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    with gradients_enabled(ids.device):
        path = _Path(model, ids, target, batch_size)
        if rule == "adaptive":
            nodes, terms = _adaptive(path, max(2, steps))             # (n,), (n, T)
            weights = trapezoid_weights(nodes)
        else:
            nodes, weights = quadrature(steps, rule)
            terms = path(nodes)[1]                                    # (n, T)
        w = torch.as_tensor(weights, dtype=terms.dtype, device=terms.device)
        attributions = (w[:, None] * terms).sum(0)                    # (T,)
        with torch.no_grad():
            ends = _logits(model, torch.stack([path.x, path.baseline]))[:, target]  # (2,)
    return IGResult(attributions, float(ends[0]), float(ends[1]), steps, rule, len(nodes))


def occlusion(model: LSTMClassifier, ids: torch.Tensor, target: int,
              batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """p(target | text) - p(target | token t replaced by <pad>) for every t: ((T,), p(text))."""
    length = ids.shape[0]
    batch = ids.repeat(length + 1, 1)  # (T+1, T) row 0: the text, row t+1: token t occluded
    steps = torch.arange(length, device=ids.device)
    batch[steps + 1, steps] = PAD_ID
    probs = []
    with torch.no_grad():
        for lo in range(0, length + 1, batch_size):
            chunk = batch[lo: lo + batch_size]  # (n, T)
            lengths = torch.full((chunk.shape[0],), length, dtype=torch.long)
            probs.append(model(chunk, lengths).softmax(-1)[:, target])  # (n,)
    p = torch.cat(probs)  # (T+1,)
    return (p[0] - p[1:]).detach(), float(p[0])

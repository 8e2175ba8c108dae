"""Explain one prediction: per-token attributions plus the LSTM's gate activations at each token.

    python -m model.explain --artifact DIR [--target LABEL] [--method integrated_gradients|occlusion]
                            [--steps N] [--png FILE] [--json] [--detail] "some text"

`explain()` returns a JSON-serialisable dict (see its docstring); the gates come from the
reference LSTM in `model.gates`, the attributions from `model.attribution`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from model.artifact import Artifact, ArtifactError, load_artifact
from model.attribution import RULES, integrated_gradients, occlusion
from model.explain_render import format_table, write_heatmap
from model.gates import token_gates, trace_lstm
from model.tokenizer import Token

METHODS = ("integrated_gradients", "occlusion")
DEFAULT_STEPS, MAX_STEPS = 64, 1000


class ExplainError(ValueError):
    """A request that cannot be explained (bad target, empty or too long text, bad method)."""


def select_tokens(artifact: Artifact, text: str, max_tokens: int | None,
                  max_length: int | None = None) -> tuple[list[Token], int]:
    """The tokens the model reads, cut to `max_length` (default: the artifact's max_length), and
    the total count. `max_tokens` limits the tokens actually explained, counted after the cut."""
    tokens = artifact.vocab.tokenize(text)
    if not tokens:
        raise ExplainError("the text has no tokens to explain (empty or only whitespace)")
    used = tokens[: min(max_length or artifact.max_length, artifact.max_length)]
    if max_tokens is not None and len(used) > max_tokens:
        raise ExplainError(f"the text has {len(used)} tokens, more than the {max_tokens} "
                           f"that can be explained")
    return used, len(tokens)


def check_options(labels: Sequence[str], target: str | None, method: str,
                  steps: int = DEFAULT_STEPS, rule: str = "adaptive") -> None:
    """Everything about a request that can be refused before any model work."""
    if target is not None and target not in labels:
        raise ExplainError(f"unknown target label {target!r}; labels are: {', '.join(labels)}")
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; methods are: {', '.join(METHODS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise ExplainError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if rule not in RULES:
        raise ExplainError(f"unknown rule {rule!r}; rules are: {', '.join(RULES)}")


def _attributions(artifact: Artifact, ids: torch.Tensor, target: int, method: str,
                  steps: int, rule: str) -> tuple[torch.Tensor, dict]:
    """(T,) attributions and the method-specific extra keys of the explanation."""
    if method == "occlusion":
        values, _ = occlusion(artifact.model, ids, target)
        return values, {}
    result = integrated_gradients(artifact.model, ids, target, steps=steps, rule=rule)
    return result.attributions, {"completeness": {
        "sum_attributions": result.sum_attributions, "score_difference": result.score_difference,
        "abs_error": result.abs_error, "rel_error": result.rel_error,
        "target_logit": result.score, "baseline_logit": result.baseline_score,
        "rule": result.rule, "steps": steps, "evaluations": result.evaluations}}


def explain(artifact: Artifact, text: str, target: str | None = None,
            method: str = "integrated_gradients", detail: bool = False,
            max_tokens: int | None = None, steps: int = DEFAULT_STEPS,
            rule: str = "adaptive", max_length: int | None = None) -> dict:
    """{"label", "score" (its probability), "target", "target_score", "method",
    "probabilities" (highest first), "completeness" (integrated gradients only), "num_tokens",
    "truncated", "tokens": [{"text", "id", "unk", "start", "stop", "attribution",
    "gates": [{"layer", "direction", "input_gate", "forget_gate", "output_gate", "cell_norm",
    + with detail: "input", "forget", "output", "candidate", "cell", "hidden"}]}]}.
    Raises ExplainError for an unknown method or target, no tokens, or more than max_tokens."""
    check_options(artifact.labels, target, method, steps, rule)
    model, labels = artifact.model, artifact.labels
    if model.training:
        raise RuntimeError("explain() needs the model in eval mode")
    tokens, total = select_tokens(artifact, text, max_tokens, max_length)
    device = next(model.parameters()).device
    ids = torch.tensor([t.id for t in tokens], dtype=torch.long, device=device)  # (T,)
    with torch.no_grad():
        probs = model(ids[None], torch.tensor([len(tokens)])).softmax(-1)[0]  # (C,)
        trace = trace_lstm(model.lstm, model.embedding(ids))
    predicted = int(probs.argmax())
    goal = predicted if target is None else labels.index(target)
    values, extra = _attributions(artifact, ids, goal, method, steps, rule)
    scores, attributions = probs.tolist(), values.tolist()  # one device -> host copy each
    ranked = sorted(range(len(labels)), key=lambda c: -scores[c])
    return {
        "label": labels[predicted], "score": scores[predicted],
        "target": labels[goal], "target_score": scores[goal], "method": method,
        "probabilities": [{"label": labels[c], "score": scores[c]} for c in ranked],
        **extra, "num_tokens": len(tokens), "truncated": total > len(tokens),
        "tokens": [{"text": tok.text, "id": tok.id, "unk": tok.unk, "start": tok.start,
                    "stop": tok.stop, "attribution": attributions[t], "gates": gates}
                   for t, (tok, gates) in enumerate(zip(tokens, token_gates(trace, detail),
                                                        strict=True))],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.explain", description=__doc__.split(
        "\n")[0])
    parser.add_argument("text")
    parser.add_argument("--artifact", required=True, type=Path, help="artifact directory")
    parser.add_argument("--target", help="label to explain (default: the predicted one)")
    parser.add_argument("--method", choices=METHODS, default="integrated_gradients")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="integrated gradients: points on the path (intervals for trapezoid)")
    parser.add_argument("--rule", choices=RULES, default="adaptive",
                        help="integrated gradients quadrature")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--png", type=Path, help="write a heatmap PNG here")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.add_argument("--detail", action="store_true", help="full gate vectors (with --json)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        artifact = load_artifact(args.artifact, args.device)
        exp = explain(artifact, args.text, args.target, args.method, args.detail,
                      args.max_tokens, args.steps, args.rule)
    except (ArtifactError, ExplainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(exp, ensure_ascii=False, indent=2) if args.json else format_table(exp),
          flush=True)
    if args.png:
        write_heatmap(exp, args.png)
        print(f"heatmap written to {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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


def _bar(value: float, scale: float, width: int = 8) -> str:
    """A diverging bar: negative to the left of '|', positive to the right."""
    n = round(width * abs(value) / scale) if scale > 0 else 0
    block = "█" if (sys.stdout.encoding or "").lower().startswith("utf") else "#"
    left = (block * n if value < 0 else "").rjust(width)
    right = (block * n if value > 0 else "").ljust(width)
    return f"{left}|{right}"


def _group_names(exp: dict) -> list[str]:
    short = {"forward": "fwd", "backward": "bwd"}
    return [f"L{g['layer']} {short[g['direction']]}" for g in exp["tokens"][0]["gates"]]


def _summary(exp: dict) -> list[str]:
    lines = [f"prediction: {exp['label']} (p={exp['score']:.4f})   "
             f"target: {exp['target']} (p={exp['target_score']:.4f})   method: {exp['method']}"]
    if "completeness" in exp:
        c = exp["completeness"]
        lines.append(f"completeness ({c['steps']} {c['rule']} steps): sum(attributions)="
                     f"{c['sum_attributions']:+.4f}  logit(text)-logit(<pad> baseline)="
                     f"{c['score_difference']:+.4f}  abs error {c['abs_error']:.1e} "
                     f"(rel {c['rel_error']:.1e})")
    else:
        lines.append("attribution = p(target | text) - p(target | token replaced by <pad>)")
    return lines


def format_table(exp: dict) -> str:
    """The explanation as a terminal table: one row per token."""
    groups = _group_names(exp)
    head1 = f"{'':>3} {'token':<14} {'span':>9}  {'attribution':<27}"
    head2 = f"{'#':>3} {'':<14} {'':>9}  {'':<27}"
    for name in groups:
        head1 += f" | {name:^27}"
        head2 += f" | {'forget':>6} {'input':>6} {'output':>6} {'|c|':>6}"
    scale = max(abs(t["attribution"]) for t in exp["tokens"])
    rows = []
    for i, tok in enumerate(exp["tokens"]):
        name = tok["text"] + ("*" if tok["unk"] else "")
        span = f"{tok['start']}:{tok['stop']}"
        row = (f"{i:>3} {name[:14]:<14} {span:>9}  "
               f"{tok['attribution']:+9.4f} {_bar(tok['attribution'], scale)}")
        for g in tok["gates"]:
            row += (f" | {g['forget_gate']:6.3f} {g['input_gate']:6.3f} {g['output_gate']:6.3f}"
                    f" {g['cell_norm']:6.3f}")
        rows.append(row)
    notes = ["gates: means over the hidden units; |c|: L2 norm of the cell state c_t"]
    if any(t["unk"] for t in exp["tokens"]):
        notes.append("* unknown word (<unk>)")
    if exp["truncated"]:
        notes.append(f"text truncated to the model's first {exp['num_tokens']} tokens")
    return "\n".join(_summary(exp) + ["", head1, head2, *rows, "", *notes])


def _panels(exp: dict) -> list[tuple]:
    """(values (T, K), colormap, vmin, vmax, column names, title) for the three heatmap panels."""
    toks, groups = exp["tokens"], _group_names(exp)
    attr = torch.tensor([[t["attribution"]] for t in toks])  # (T, 1)
    gates = torch.tensor([[g[k] for g in t["gates"] for k in ("forget_gate", "input_gate",
                                                               "output_gate")] for t in toks])
    cells = torch.tensor([[g["cell_norm"] for g in t["gates"]] for t in toks])  # (T, L*D)
    m = float(attr.abs().max()) or 1.0
    method = {"integrated_gradients": "IG"}.get(exp["method"], exp["method"])
    return [(attr, "RdBu_r", -m, m, [f"attribution ({method})"], f"to {exp['target']}"),
            (gates, "viridis", 0.0, 1.0, [f"{n} {k}" for n in groups for k in "fio"],
             "gate means (forget, input, output)"),
            (cells, "magma", 0.0, float(cells.max()) or 1.0, [f"{n} |c|" for n in groups],
             "cell norm")]


def write_heatmap(exp: dict, path: Path | str) -> None:
    """PNG heatmap: rows = tokens; columns = attribution (diverging colormap, centred on 0),
    gate means (0..1) and cell norms per layer/direction."""
    import matplotlib  # training/dev dependency, imported only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toks, panels = exp["tokens"], _panels(exp)
    lds = len(toks[0]["gates"])
    fig, axes = plt.subplots(1, 3, figsize=(2.9 + 1.8 * lds, 1.8 + 0.32 * len(toks)),
                             layout="constrained",
                             gridspec_kw={"width_ratios": [1.5, 3 * lds, lds]})
    for ax, (data, cmap, lo, hi, names, title) in zip(axes, panels, strict=True):
        image = ax.imshow(data.numpy(), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(toks)), [t["text"] for t in toks] if ax is axes[0] else [])
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, location="bottom", shrink=0.9, aspect=12)
    scale = panels[0][3]
    for row, tok in enumerate(toks):
        axes[0].text(0, row, f"{tok['attribution']:+.2f}", ha="center", va="center", fontsize=7,
                     color="white" if abs(tok["attribution"]) > 0.6 * scale else "black")
    fig.suptitle(f"prediction: {exp['label']} (p={exp['score']:.3f})", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


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

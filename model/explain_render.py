"""An explanation (model.explain) for people: a terminal table and a PNG heatmap, one row per
token with its attribution and the LSTM's gate means."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


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

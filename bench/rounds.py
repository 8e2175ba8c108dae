"""Rounds of the serving benchmark (`--rounds N`): every system is started and measured once per
round, round after round, so that a drift in the machine's speed during a run falls on all systems
alike rather than on whichever ran last (this VM's throughput rose ~15 % over a few minutes of
the same load), and the verdict comes with its spread: one ratio per round.
"""

from __future__ import annotations

from statistics import median

from bench.loadgen import Point, median_point
from bench.report import best_of, comparisons


def merge_rounds(rows: list[dict]) -> list[dict]:
    """One row per (system, concurrency), in first-seen order: the field-wise median of all the
    runs of all rounds, as one round's repeats are merged."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["concurrency"]), []).append(row)
    merged = []
    for group in groups.values():
        runs = [run for row in group for run in row["runs"]]
        per_request = [ms for row in group for ms in row.get("server_cpu_ms_per_run", [])]
        merged.append({**group[0], **median_point([Point(**run) for run in runs]).to_dict(),
                       "runs": runs, "cpu_cores": [c for row in group for c in row["cpu_cores"]],
                       "server_cpu_ms_per_run": per_request,
                       "server_cpu_ms_per_request": round(median(per_request), 3) if per_request else None,
                       "ready_s": round(median(row["ready_s"] for row in group), 2),
                       "rounds": len(group)})
        merged[-1].pop("round", None)
    return merged


def round_ratios(rows: list[dict]) -> dict[int, dict[str, list[float]]]:
    """{concurrency: {label of `report.comparisons`: [best textclf ÷ it, one per round]}}, best
    against best within each round."""
    out: dict[int, dict[str, list[float]]] = {}
    for conc in sorted({r["concurrency"] for r in rows}):
        for rnd in sorted({r["round"] for r in rows}):
            these = [r for r in rows if r["round"] == rnd]
            ours = best_of(these, "textclf", conc)
            if ours is None:
                continue
            for label, other, _ in comparisons(these, conc):
                out.setdefault(conc, {}).setdefault(label, []).append(
                    round(ours["rps"] / other["rps"], 2))
    return out


def round_lines(rows: list[dict]) -> list[str]:
    """The per-round ratios, one line per concurrency, with their median and the target."""
    lines = []
    for conc, versus in round_ratios(rows).items():
        targets = {label: target for label, _, target in comparisons(rows, conc)}
        parts = []
        for label, values in versus.items():
            target = targets[label]
            parts.append(f"÷ {label} {', '.join(f'{v:.2f}' for v in values)} "
                         f"(median {median(values):.2f}, {sum(v >= target for v in values)} of "
                         f"{len(values)} rounds >= {target})")
        lines.append(f"c={conc}, best textclf per round: " + "; ".join(parts))
    return lines

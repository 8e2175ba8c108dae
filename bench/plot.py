"""The serving benchmark as a picture: requests/s and p99 latency against concurrency.

    python -m bench.plot [bench/results/serving.json] [--out bench/results/serving.png]

One line per system (solid: textclf, dashed: the others), log-scaled concurrency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    systems: dict[str, list[dict]] = {}
    for row in results["rows"]:
        systems.setdefault(row["system"], []).append(row)
    fig, (rps_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in systems.items():
        rows = sorted(rows, key=lambda r: r["concurrency"])
        conc = [r["concurrency"] for r in rows]
        style = "-" if label.startswith("textclf") else "--"
        rps_ax.plot(conc, [r["rps"] for r in rows], style, marker="o", label=label)
        p99_ax.plot(conc, [r["p99_ms"] for r in rows], style, marker="o", label=label)
    for ax, title in ((rps_ax, "requests/s (higher is better)"),
                      (p99_ax, "p99 latency, ms (lower is better)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for r in results["rows"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent connections")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    p99_ax.set_yscale("log")
    rps_ax.legend(fontsize=8)
    meta = results.get("meta", {})
    fig.suptitle(f"POST /predict, {meta.get('words', 30)}-word texts, {meta.get('cpus', '?')} CPUs "
                 f"(python -m bench.serving)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", type=Path, default=RESULTS / "serving.json")
    p.add_argument("--out", type=Path, default=RESULTS / "serving.png")
    args = p.parse_args(argv)
    print(f"written {plot(json.loads(args.results.read_text()), args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

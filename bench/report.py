"""The serving benchmark's table and ratios (textclf's requests/s over each other system's)."""

from __future__ import annotations

REFERENCE = "textclf"


def ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{other system: {concurrency: textclf rps / other rps}} at the concurrencies both ran."""
    ref = {r["concurrency"]: r["rps"] for r in rows if r["system"] == REFERENCE}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["system"] != REFERENCE and r["concurrency"] in ref and r["rps"] > 0:
            out.setdefault(r["system"], {})[str(r["concurrency"])] = round(
                ref[r["concurrency"]] / r["rps"], 2)
    return out


def table_lines(results: dict) -> list[str]:
    ratio = results.get("ratios", {})
    head = (f"| {'system':<14} | {'conc':>4} | {'req/s':>8} | {'p50 ms':>7} | {'p90 ms':>7} | "
            f"{'p99 ms':>7} | {'errors':>6} | {'textclf ×':>9} | {'CPU ms/req':>10} | "
            f"{'cores srv/wrk/other':>19} |")
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in results["rows"]:
        x = ratio.get(r["system"], {}).get(str(r["concurrency"]))
        cpu = r["cpu_cores"][len(r["cpu_cores"]) // 2]
        lines.append(
            f"| {r['system']:<14} | {r['concurrency']:>4} | {r['rps']:>8.0f} | {r['p50_ms']:>7.2f} | "
            f"{r['p90_ms']:>7.2f} | {r['p99_ms']:>7.2f} | {r['errors']:>6} | "
            f"{(f'{x:.2f}' if x else '-'):>9} | {_num(r.get('server_cpu_ms_per_request')):>10} | "
            + f"{cpu['server']:.2f}/{cpu['loadgen']:.2f}/{cpu['other']:.2f}".rjust(19) + " |")
    return lines


def best_of(rows: list[dict], name: str, concurrency: int) -> dict | None:
    """The fastest configuration (any worker count) of system `name` at that concurrency;
    `torchserve@REV` rows (older model code) do not count."""
    runs = [r for r in rows if r.get("name") == name and r["concurrency"] == concurrency
            and "@" not in r["system"]]
    return max(runs, key=lambda r: r["rps"], default=None)


BEST_TORCHSERVE = "best TorchServe"


def comparisons(rows: list[dict], concurrency: int) -> list[tuple[str, dict, float]]:
    """What issue 5's targets set best textclf against at that concurrency, as (label, row,
    target ratio): best TorchServe (>= 1.5) and each constant-JSON FastAPI endpoint (>= 0.7);
    rows with no requests/s are left out."""
    best_ts = best_of(rows, "torchserve", concurrency)
    found = [(BEST_TORCHSERVE, best_ts, 1.5)] if best_ts is not None else []
    found += [(r["system"], r, 0.7) for r in rows
              if r.get("name") == "constant" and r["concurrency"] == concurrency]
    return [(label, row, target) for label, row, target in found if row["rps"] > 0]


def target_lines(rows: list[dict]) -> list[str]:
    """Issue 5's targets, best textclf against each of `comparisons`, per concurrency."""
    lines = []
    for conc in sorted({r["concurrency"] for r in rows}):
        ours = best_of(rows, "textclf", conc)
        if ours is None:
            continue
        parts = [f"c={conc}: best textclf ({ours['system']}) {ours['rps']:,.0f} req/s"]
        for label, other, target in comparisons(rows, conc):
            which = f"{other['system']} " if label == BEST_TORCHSERVE else ""
            parts.append(f"{ours['rps'] / other['rps']:.2f}x {label} "
                         f"({which}{other['rps']:,.0f}; target >= {target})")
        lines.append(", ".join(parts))
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(results: dict) -> None:
    print()
    print("\n".join(table_lines(results)))
    m = results["meta"]
    rounds = f" in each of {m['rounds']} rounds" if m.get("rounds", 1) > 1 else ""
    print(f"\n{m['duration_s']:g} s per run, {m['repeat']} run(s) per point{rounds} (median), "
          f"{m['warmup_s']:g} s warm-up after start + {m.get('point_warmup_s', 0):g} s per point, "
          f"{m['words']}-word texts; "
          f"load average {m['loadavg_start'][0]:.2f} -> {m.get('loadavg_end', [0])[0]:.2f}")
    print("textclf × = textclf's requests/s divided by that system's, same concurrency; "
          "CPU ms/req = server CPU time per request; cores = CPU used by the server / wrk / "
          "everything else on the machine during the run (median run)")
    for line in target_lines(results["rows"]):
        print(line)
    for label, reason in results.get("skipped", {}).items():
        print(f"SKIPPED {label}: {reason}")


def compact_table(results: dict) -> list[str]:
    """One Markdown row per system, the concurrencies side by side (the README's table)."""
    ratio = results.get("ratios", {})
    systems: dict[str, list[dict]] = {}
    for r in results["rows"]:
        systems.setdefault(r["system"], []).append(r)
    lines = ["| system | conc | req/s | p50 ms | p90 ms | p99 ms | errors | textclf ÷ | CPU ms/req |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for label, rows in systems.items():
        rows = sorted(rows, key=lambda r: r["concurrency"])

        def col(fmt: str, values: list) -> str:
            return " / ".join("—" if v is None else format(v, fmt) for v in values)

        x = [ratio.get(label, {}).get(str(r["concurrency"])) for r in rows]
        cells = [col("d", [r["concurrency"] for r in rows]), col(",.0f", [r["rps"] for r in rows]),
                 *(col(".2f", [r[k] for r in rows]) for k in ("p50_ms", "p90_ms", "p99_ms")),
                 str(sum(r["errors"] for r in rows)),
                 "—" if label == REFERENCE else col(".2f", x),
                 col(".2f", [r.get("server_cpu_ms_per_request") for r in rows])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":  # python -m bench.report [serving.json]: the README's table
    import json
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/serving.json")
    data = json.loads(path.read_text())
    print("\n".join(compact_table(data) + [""] + target_lines(data["rows"])))

"""bench/rounds.py: rows of several rounds merged, and one verdict per round."""

from __future__ import annotations

from statistics import median

from bench.rounds import merge_rounds, round_lines, round_ratios


def run(rps: float, p50: float = 1.0) -> dict:
    return {"rps": rps, "p50_ms": p50, "p90_ms": 2 * p50, "p99_ms": 3 * p50, "max_ms": 4 * p50,
            "requests": int(rps * 10), "errors": 0, "non2xx": 0, "socket_errors": 0}


def row(system: str, name: str, rnd: int, rps: list[float], conc: int = 64) -> dict:
    runs = [run(r) for r in rps]
    return {"system": system, "name": name, "workers": 1, "concurrency": conc, "round": rnd,
            **run(median(rps)), "runs": runs, "cpu_cores": [{"server": 1.0}] * len(runs),
            "server_cpu_ms_per_run": [1000 / r for r in rps], "ready_s": 1.0 + rnd}


ROWS = [row("textclf", "textclf", 1, [3000, 3200]), row("torchserve", "torchserve", 1, [2000, 2000]),
        row("constant", "constant", 1, [4000, 4000]),
        row("textclf", "textclf", 2, [3600, 3700]), row("torchserve", "torchserve", 2, [2300, 2200]),
        row("constant", "constant", 2, [5000, 5200])]


def test_merge_takes_the_median_of_every_run_of_every_round():
    merged = merge_rounds(ROWS)
    assert [r["system"] for r in merged] == ["textclf", "torchserve", "constant"]
    textclf = merged[0]
    assert textclf["rps"] == 3400.0  # median of 3000, 3200, 3600, 3700
    assert textclf["requests"] == 135_000 and len(textclf["runs"]) == 4
    assert textclf["rounds"] == 2 and "round" not in textclf
    assert textclf["ready_s"] == 2.5
    assert textclf["server_cpu_ms_per_request"] == round((1000 / 3200 + 1000 / 3600) / 2, 3)


def test_merge_keeps_concurrencies_apart():
    rows = [row("textclf", "textclf", 1, [100], conc=1), row("textclf", "textclf", 1, [900])]
    assert [(r["concurrency"], r["rps"]) for r in merge_rounds(rows)] == [(1, 100), (64, 900)]


def test_ratios_are_best_against_best_within_each_round():
    rows = ROWS + [row("textclf-2w", "textclf", 1, [6000]), row("torchserve-2w", "torchserve", 2, [4600])]
    versus = round_ratios(rows)[64]
    # round 1: textclf-2w 6000 over torchserve 2000; round 2: textclf 3650 over torchserve-2w 4600
    assert versus["best TorchServe"] == [3.0, round(3650 / 4600, 2)]
    assert versus["constant"] == [1.5, round(3650 / 5100, 2)]


def test_round_lines_count_the_rounds_that_meet_each_target():
    (line,) = round_lines(ROWS)
    assert line.startswith("c=64, best textclf per round: ÷ best TorchServe 1.55, 1.62 (median 1.58, 2 of 2")
    assert "÷ constant 0.78, 0.72 (median 0.75, 2 of 2 rounds >= 0.7)" in line

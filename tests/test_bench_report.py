"""bench/report.py and bench/plot.py: the serving benchmark's verdict and picture from rows."""

from __future__ import annotations

from pathlib import Path

from bench.plot import plot
from bench.report import best_of, compact_table, ratios, target_lines


def row(system: str, name: str, conc: int, rps: float, p99: float = 5.0) -> dict:
    return {"system": system, "name": name, "concurrency": conc, "rps": rps, "p99_ms": p99}


ROWS = [row("textclf", "textclf", 64, 3000), row("textclf-2w", "textclf", 64, 6000),
        row("torchserve", "torchserve", 64, 2500), row("torchserve-2w", "torchserve", 64, 4000),
        row("torchserve@abc", "torchserve", 64, 9000), row("constant", "constant", 64, 8000),
        row("textclf", "textclf", 1, 800), row("torchserve", "torchserve", 1, 250)]


def test_best_configuration_ignores_older_model_code():
    assert best_of(ROWS, "textclf", 64)["system"] == "textclf-2w"
    assert best_of(ROWS, "torchserve", 64)["system"] == "torchserve-2w"  # not @abc
    assert best_of(ROWS, "naive", 64) is None


def test_target_lines_compare_best_against_best():
    lines = target_lines(ROWS)
    assert lines[0].startswith("c=1: best textclf (textclf) 800 req/s, 3.20x best TorchServe")
    assert "1.50x best TorchServe (torchserve-2w 4,000; target >= 1.5)" in lines[1]
    assert "0.75x constant (8,000; target >= 0.7)" in lines[1]


def test_ratios_are_against_one_textclf_worker():
    assert ratios(ROWS)["torchserve-2w"] == {"64": 0.75}
    assert ratios(ROWS)["torchserve"] == {"64": 1.2, "1": 3.2}


def test_plot_writes_a_png(tmp_path: Path):
    out = plot({"rows": ROWS, "meta": {"words": 30, "cpus": 2}}, tmp_path / "serving.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_compact_table_has_one_row_per_system():
    rows = [dict(r, p50_ms=1.0, p90_ms=2.0, errors=0, server_cpu_ms_per_request=0.3) for r in ROWS]
    lines = compact_table({"rows": rows, "ratios": ratios(rows)})
    assert lines[2].startswith("| textclf | 1 / 64 | 800 / 3,000 | 1.00 / 1.00 |")
    assert "| torchserve | 1 / 64 | 250 / 2,500 |" in "\n".join(lines)
    assert len(lines) == 2 + len({r["system"] for r in rows})

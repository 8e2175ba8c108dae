"""model.explain_render: the terminal table and the PNG heatmap of an explanation."""

from __future__ import annotations

from pathlib import Path

from model.explain import explain
from model.explain_render import _bar, format_table, write_heatmap


def test_format_table_lists_tokens(toy_artifact) -> None:
    table = format_table(explain(toy_artifact, "The plot was awful, zzz", method="occlusion"))
    for word in ("the", "plot", "was", "awful", "zzz*", "L1 bwd", "forget", "prediction"):
        assert word in table
    assert "attribution = p(target | text)" in table  # occlusion's note, not IG's completeness


def test_bars_diverge_from_the_middle() -> None:
    left, right = _bar(-1.0, 1.0, width=4).split("|"), _bar(0.5, 1.0, width=4).split("|")
    assert left[0].strip() and not left[1].strip()  # negative: drawn left of '|'
    assert not right[0].strip() and len(right[1].strip()) == 2  # half the scale: half the width
    assert _bar(0.3, 0.0, width=4) == "    |    "  # no scale (all zero): no bar


def test_heatmap_is_a_png(toy_artifact, tmp_path: Path) -> None:
    path = tmp_path / "explain.png"
    write_heatmap(explain(toy_artifact, "the movie was great"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

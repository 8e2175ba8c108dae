"""bench/loadgen.py without wrk: the Lua script it writes and the median over repeats."""

from __future__ import annotations

from pathlib import Path

from bench.loadgen import Point, lua_string, median_point, write_script


def _point(rps: float, p99: float, errors: int = 0) -> Point:
    return Point(rps=rps, p50_ms=1.0, p90_ms=2.0, p99_ms=p99, max_ms=9.0, requests=100,
                 errors=errors, non2xx=errors, socket_errors=0)


def test_median_point_takes_field_medians_and_sums_counts() -> None:
    point = median_point([_point(300, 5.0), _point(100, 7.0, errors=2), _point(200, 6.0),
                          _point(400, 8.0)])
    assert point.rps == 250 and point.p99_ms == 6.5  # even count: mean of the middle two
    assert point.requests == 400 and point.errors == point.non2xx == 2


def test_lua_strings_need_no_escapes() -> None:
    assert lua_string('{"inputs": "a\\"b"}') == '[=[{"inputs": "a\\"b"}]=]'
    assert lua_string("x]=]y") == "[==[x]=]y]==]"  # a closing bracket inside: one level more


def test_script_holds_every_body_and_the_path(tmp_path: Path) -> None:
    script = write_script([b'{"inputs": "one"}', '{"inputs": "tw\u00f6"}'.encode()], "/predict",
                          tmp_path).read_text(encoding="utf-8")
    assert '[=[{"inputs": "one"}]=]' in script and "tw\u00f6" in script
    assert 'wrk.format("POST", "/predict"' in script and "WRKJSON " in script

"""Load from a separate process: wrk with a Lua script that POSTs varied JSON bodies.

The script pre-formats one request per text in `init`, cycles through them, and prints its
summary (requests, errors, latency percentiles) as one JSON line in `done`, so nothing is
parsed from wrk's human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

MARK = "WRKJSON "
LUA_TEMPLATE = r"""
local bodies = {BODIES}
local reqs = {}
local n = 0
init = function(args)
  for i, body in ipairs(bodies) do
    reqs[i] = wrk.format("POST", "{PATH}", {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  n = n % #reqs + 1
  return reqs[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{MARK}{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


@dataclass
class Point:
    """One wrk run. Latencies in ms; errors = non-2xx/3xx responses + socket errors."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    non2xx: int
    socket_errors: int

    def to_dict(self) -> dict:
        return asdict(self)


def lua_string(text: str) -> str:
    """A Lua long-bracket literal: no escapes to translate (Lua's differ from JSON's)."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def write_script(bodies: list[bytes], path: str, directory: Path) -> Path:
    table = "{" + ",\n".join(lua_string(b.decode("utf-8")) for b in bodies) + "}"
    script = (LUA_TEMPLATE.replace("{BODIES}", table).replace("{PATH}", path)
              .replace("{MARK}", MARK))
    out = Path(tempfile.mkstemp(suffix=".lua", dir=directory)[1])
    out.write_text(script, encoding="utf-8")
    return out


def run_wrk(url: str, script: Path, connections: int, duration_s: float, threads: int = 1,
            timeout_s: float = 10.0) -> Point:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration_s:g}s",
           f"--timeout={timeout_s:g}s", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30,
                          start_new_session=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    s = json.loads(line[len(MARK):])
    sockets = s["connect"] + s["read"] + s["write"] + s["timeout"]
    return Point(rps=s["requests"] / (s["duration_us"] / 1e6), p50_ms=s["p50_us"] / 1000,
                 p90_ms=s["p90_us"] / 1000, p99_ms=s["p99_us"] / 1000, max_ms=s["max_us"] / 1000,
                 requests=s["requests"], errors=s["status"] + sockets, non2xx=s["status"],
                 socket_errors=sockets)


def median_point(points: list[Point]) -> Point:
    """Field-wise median over repeats (counts are summed)."""

    def total(name: str) -> int:
        return sum(getattr(p, name) for p in points)

    return Point(rps=median([p.rps for p in points]), p50_ms=median([p.p50_ms for p in points]),
                 p90_ms=median([p.p90_ms for p in points]), p99_ms=median([p.p99_ms for p in points]),
                 max_ms=median([p.max_ms for p in points]), requests=total("requests"),
                 errors=total("errors"), non2xx=total("non2xx"),
                 socket_errors=total("socket_errors"))

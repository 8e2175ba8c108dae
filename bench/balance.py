"""Connections per worker with and without TEXTCLF_BALANCE_CONNECTIONS (service/balance.py).

    python -m bench.balance [--workers 2] [--rounds 10] [--duration 8] [--concurrency 64]

Starts two textclf servers with the same number of workers, balancing on and off, and loads
them in turn (alternating, so a change in machine load hits both alike) with wrk: each run opens
its connections at once, as a client pool does. Per run it prints how the open connections were
split between the workers (from /proc, at 80 % of the run), req/s and latency; then the median
and the worst run of each. Writes bench/results/balance.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from bench.common import RESULTS, Processes, group_pids, request_texts
from bench.loadgen import run_wrk, write_script
from bench.systems import Options, System, start


def established(port: int, pids: list[int]) -> dict[int, int]:
    """Established TCP connections to local `port` held by each of `pids` (Linux /proc: the
    sockets' inodes from /proc/net/tcp, matched to the processes' open files)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    held = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that is gone holds none
            fds = Path(f"/proc/{pid}/fd")
            held[pid] = sum(1 for fd in fds.iterdir() if _link(fd) in inodes)
    return held


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def split(port: int, pgid: int) -> list[int]:
    """Connections per worker of the server in process group `pgid`, largest first."""
    counts = established(port, group_pids(pgid)).values()
    return sorted((n for n in counts if n), reverse=True)


def one_run(port: int, pgid: int, script: Path, args: argparse.Namespace) -> dict:
    seen: dict[str, list[int]] = {}
    probe = threading.Timer(0.8 * args.duration, lambda: seen.setdefault("split", split(port, pgid)))
    probe.start()
    point = run_wrk(f"http://127.0.0.1:{port}", script, args.concurrency, args.duration)
    probe.join()
    return {"split": seen.get("split", []), **point.to_dict()}


def summary(runs: list[dict]) -> str:
    def mid(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    worst = min(runs, key=lambda r: r["rps"])
    return (f"median {mid('rps'):,.0f} req/s, p50 {mid('p50_ms'):.1f} ms, p99 {mid('p99_ms'):.1f} ms;"
            f" worst run "
            f"{worst['rps']:,.0f} req/s (split {'/'.join(map(str, worst['split']))})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--out", type=Path, default=RESULTS / "balance.json")
    args = p.parse_args(argv)
    bodies = [orjson.dumps({"inputs": t}) for t in request_texts()]
    results: dict[str, list[dict]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp, Processes() as procs:
        script = write_script(bodies, "/predict", Path(tmp))
        ports, pgids = {}, {}
        for mode in results:
            flag = {"TEXTCLF_BALANCE_CONNECTIONS": "true" if mode == "on" else "false"}
            proc, launch, _ = start(System("textclf", args.workers),
                                    Options(args.model_dir.resolve(), Path(tmp), flag), procs, bodies[0])
            ports[mode], pgids[mode] = urlsplit(launch.url).port, proc.pid  # its own process group
        for port in ports.values():
            run_wrk(f"http://127.0.0.1:{port}", script, args.concurrency, 4)  # warm-up
        for round_ in range(args.rounds):
            for mode in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
                run = one_run(ports[mode], pgids[mode], script, args)
                results[mode].append(run)
                print(f"balance {mode:3s} split {'/'.join(map(str, run['split'])):7s} "
                      f"{run['rps']:7,.0f} req/s  p50 {run['p50_ms']:6.2f}  p99 {run['p99_ms']:6.2f} ms  "
                      f"errors {run['errors']}", flush=True)
    for mode, runs in results.items():
        print(f"balance {mode}: {summary(runs)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vars(args) | {"out": str(args.out), "model_dir": str(args.model_dir),
                                                 "results": results}, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

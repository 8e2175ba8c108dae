"""Startup and memory: process start -> /health/ready 200, and resident memory after warm-up
and after load.

    python -m bench.startup [--model-dir artifacts/default] [--repeat 3] [--workers 1]

Each round starts `python -m service` (its own process group, 127.0.0.1), polls /health/ready
every 10 ms, reads the RSS of every process in the group (the server and, with workers, the
uvicorn workers) once ready, drives `--load-seconds` of wrk load at concurrency 64 through
/predict, reads RSS again, and stops the group. Prints medians; writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import (
    RESULTS,
    Processes,
    free_port,
    group_pids,
    pss_mb,
    request_texts,
    rss_mb,
    wait_ready,
)
from bench.loadgen import run_wrk, write_script


def one_round(args: argparse.Namespace, procs: Processes, workdir: Path, script: Path) -> dict:
    port = free_port()
    env = {"TEXTCLF_MODEL_DIR": str(args.model_dir), "TEXTCLF_HOST": "127.0.0.1",
           "TEXTCLF_PORT": str(port), "TEXTCLF_WORKERS": str(args.workers),
           "TEXTCLF_LOG_LEVEL": "warning", "TEXTCLF_DEVICE": "cpu"}
    started = time.perf_counter()
    proc = procs.start([sys.executable, "-m", "service"], env, log=workdir / f"service-{port}.log")
    try:
        ready_s = wait_ready(f"http://127.0.0.1:{port}/health/ready", proc, 120.0, poll_s=0.01)
        ready_s = time.perf_counter() - started  # from the spawn, not from the first poll
        pids = group_pids(proc.pid)
        rss_ready, pss_ready = rss_mb(pids), pss_mb(pids)
        point = run_wrk(f"http://127.0.0.1:{port}/predict", script, 64, args.load_seconds)
        pids = group_pids(proc.pid)
        rss_loaded, pss_loaded = rss_mb(pids), pss_mb(pids)
    finally:
        procs.stop(proc)
    return {"ready_s": round(ready_s, 3), "rss_ready_mb": round(rss_ready, 1),
            "rss_after_load_mb": round(rss_loaded, 1), "pss_ready_mb": round(pss_ready, 1),
            "pss_after_load_mb": round(pss_loaded, 1), "processes": len(pids),
            "load_requests": point.requests, "load_errors": point.errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--load-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = p.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    bodies = [orjson.dumps({"inputs": t}) for t in request_texts(30)]
    with tempfile.TemporaryDirectory(prefix="textclf-startup-") as tmp, Processes() as procs:
        script = write_script(bodies, "/predict", Path(tmp))
        rounds = [one_round(args, procs, Path(tmp), script) for _ in range(args.repeat)]
    med = {k: statistics.median(r[k] for r in rounds)
           for k in ("ready_s", "rss_ready_mb", "rss_after_load_mb", "pss_ready_mb",
                     "pss_after_load_mb")}
    print(f"textclf, {args.workers} worker(s), {args.repeat} rounds (median; all rounds in the JSON)")
    print("| start -> ready | RSS after warm-up | RSS after load | PSS after warm-up | PSS after load |")
    print("|---------------:|------------------:|---------------:|------------------:|---------------:|")
    print(f"| {med['ready_s']:>12.2f} s | {med['rss_ready_mb']:>14.0f} MB | "
          f"{med['rss_after_load_mb']:>11.0f} MB | {med['pss_ready_mb']:>14.0f} MB | "
          f"{med['pss_after_load_mb']:>11.0f} MB |")
    print(f"(summed over the {rounds[0]['processes']} process(es) of the server's group; PSS counts "
          "shared pages once; "
          f"load: wrk, concurrency 64, {args.load_seconds:g} s, "
          f"{rounds[-1]['load_requests']} requests in the last round)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"workers": args.workers, "median": med, "rounds": rounds},
                                   indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

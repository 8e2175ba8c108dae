"""Check that /metrics adds up across TEXTCLF_WORKERS processes (prometheus-client multiprocess).

    python -m bench.workers [--model-dir artifacts/default] [--workers 2] [--duration 5]

Starts `python -m service` with N workers, loads /predict with wrk (concurrency 16), then
scrapes /metrics several times (each scrape lands on whichever worker accepts it) and checks:
every scrape reports the same /predict count, that count matches what wrk completed (wrk stops
with up to 16 requests in flight, which the server still finishes), predictions and batched
texts equal requests, and every worker served some. Then SIGHUP (uvicorn replaces the workers)
and checks that readiness and model info only reflect live workers and no counter went down.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from bench.common import Processes, free_port, request_texts, wait_ready
from bench.loadgen import run_wrk, write_script

CONCURRENCY = 16
SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})? (\S+)$")


def scrape(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if (m := SAMPLE.match(line)) and m.group(1).startswith("textclf_"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(sample: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in sample.items() if k.startswith(prefix))


PREDICT = 'textclf_requests_total{endpoint="/predict",status="200"}'


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def per_worker(directory: Path) -> dict[str, float]:
    """/predict requests per worker pid, from the workers' own counter files."""
    from prometheus_client.mmap_dict import MmapedDict

    counts = {}
    for path in sorted(directory.glob("counter_*.db")):
        values = MmapedDict(str(path), read_mode=True)
        counts[path.stem.split("_")[1]] = sum(
            v for key, v, _ in values.read_all_values() if '"/predict"' in key
            and "textclf_requests_total" in key)
        values.close()
    return counts


def load_and_scrape(base: str, script: Path, duration: float, directory: Path) -> list[bool]:
    before = scrape(base)
    done = run_wrk(base + "/predict", script, CONCURRENCY, duration)
    time.sleep(1.0)
    scrapes = [scrape(base) for _ in range(6)]
    counts = [s.get(PREDICT, 0.0) - before.get(PREDICT, 0.0) for s in scrapes]
    last = scrapes[-1]
    texts = total(last, "textclf_batch_size_sum") - total(before, "textclf_batch_size_sum")
    predictions = total(last, "textclf_predictions_total") - total(before, "textclf_predictions_total")
    workers = per_worker(directory)
    return [
        check("scrapes agree", len(set(counts)) == 1, f"/predict count in 6 scrapes: {counts}"),
        check("count matches wrk", done.requests <= counts[0] <= done.requests + CONCURRENCY,
              f"server {counts[0]:.0f}, wrk completed {done.requests} (+ up to {CONCURRENCY} in flight)"),
        check("texts and predictions add up", texts == predictions == counts[0],
              f"batched texts {texts:.0f}, predictions {predictions:.0f}"),
        check("every worker served", len(workers) >= 2 and all(workers.values()),
              f"/predict per worker pid: {workers}"),
    ]


def after_reload(base: str, parent: int) -> list[bool]:
    before = scrape(base)
    pids = {k for k in before if k.startswith("textclf_model_info")}
    os.kill(parent, signal.SIGHUP)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(2)
        now = scrape(base)
        live = {k for k in now if k.startswith("textclf_model_info") and now[k] == 1}
        if not live & pids and len(live) == len(pids):
            break
    return [
        check("ready after SIGHUP", now.get("textclf_ready") == 1.0,
              f"textclf_ready {now.get('textclf_ready')}"),
        check("model info: live workers only", len(live) == len(pids),
              f"{len(live)} series: {sorted(live)}"),
        check("counters kept", now.get(PREDICT, 0) >= before.get(PREDICT, 0),
              f"/predict {before.get(PREDICT, 0):.0f} -> {now.get(PREDICT, 0):.0f}"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    bodies = [orjson.dumps({"inputs": t}) for t in request_texts(30)]
    with tempfile.TemporaryDirectory(prefix="textclf-workers-") as tmp, Processes() as procs:
        directory, port = Path(tmp) / "metrics", free_port()
        env = {"TEXTCLF_MODEL_DIR": str(args.model_dir.resolve()), "TEXTCLF_HOST": "127.0.0.1",
               "TEXTCLF_PORT": str(port), "TEXTCLF_WORKERS": str(args.workers),
               "TEXTCLF_MULTIPROC_DIR": str(directory), "TEXTCLF_LOG_LEVEL": "warning"}
        proc = procs.start([sys.executable, "-m", "service"], env, log=Path(tmp) / "service.log")
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/health/ready", proc, 180.0)
        time.sleep(2.0)  # let every worker finish starting
        script = write_script(bodies, "/predict", Path(tmp))
        results = load_and_scrape(base, script, args.duration, directory)
        results += after_reload(base, proc.pid)
    print("all checks passed" if all(results) else "SOME CHECKS FAILED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

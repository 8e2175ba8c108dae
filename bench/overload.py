"""Overload check: drive a live textclf at about twice its capacity and watch it hold.

    python bench/overload.py                     # small built-in model, 20 s at 2x capacity
    python bench/overload.py --duration 20 --factor 2 --queue-size 64 --texts 8
    python bench/overload.py --model-dir artifacts/default

Starts `python -m service` on 127.0.0.1 (a free port) with a small TEXTCLF_MAX_QUEUE_SIZE,
measures its capacity with a short closed loop, then sends /predict at `factor` x that rate in an
open loop (arrivals on a fixed schedule, not waiting for answers) for `duration` seconds.

Passes (exit 0) when: only 200 and 429 come back, every 429 carries Retry-After, nothing is lost
(sent - answered = 0), the p99 of accepted requests stays under --max-p99-ms, RSS grows by less
than --max-rss-growth-mb over the run, and the service is ready and answers afterwards.

tests/test_reliability.py runs it short with `run_overload`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # also run as a script: python bench/overload.py

from bench.live import LiveService, build_artifact, make_texts  # noqa: E402
from bench.overload_report import Report, check, p99_bound_ms, percentile  # noqa: E402
from bench.rawclient import RawClient  # noqa: E402


async def _closed_loop(client: RawClient, request: bytes, workers: int,
                       seconds: float) -> tuple[int, int]:
    """`workers` clients back to back for `seconds`; returns (200s, others)."""
    ok = other = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, other
        while time.perf_counter() < stop_at:
            status, _, _ = await client.send(request)
            if status == 200:
                ok += 1
            else:
                other += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok, other


async def _open_loop(client: RawClient, request: bytes, rate: float, seconds: float,
                     report: Report, latencies: list[float], rejections: list[float],
                     statuses: Counter[int], max_in_flight: int) -> None:
    """Arrivals every 1/rate s whatever the answers; each one a task."""
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        start = time.perf_counter()
        try:
            status, headers, _ = await client.send(request)
        except Exception as exc:  # noqa: BLE001 - counted as lost
            report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
            return
        report.answered += 1
        statuses[status] += 1
        if status == 200:
            latencies.append(time.perf_counter() - start)
        elif status == 429:
            rejections.append(time.perf_counter() - start)
            report.retry_after_missing += "retry-after" not in headers

    start = time.perf_counter()
    n = 0
    while (due := start + n / rate) < start + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) < max_in_flight:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            report.sent += 1
        else:
            report.errors["client_backlog_full"] = report.errors.get("client_backlog_full", 0) + 1
        n += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def _drive(service: LiveService, *, duration_s: float, factor: float, texts: int,
                 words: int, calibrate_s: float, max_in_flight: int,
                 headers: dict[str, str]) -> Report:
    report = Report(duration_s=duration_s)
    body = json.dumps({"inputs": make_texts(texts, words)}).encode()
    request = RawClient.build("POST", "/predict", body,
                              {"Content-Type": "application/json", **headers})
    client = RawClient("127.0.0.1", service.port, max_in_flight)
    try:
        queue = int(service.env.get("TEXTCLF_MAX_QUEUE_SIZE", "1024"))
        workers = max(2, queue // texts)  # as many as the queue holds: full batches, no 429
        await _closed_loop(client, request, workers, min(1.0, calibrate_s))  # warm-up
        ok, _ = await _closed_loop(client, request, workers, calibrate_s)
        report.capacity_rps = ok / calibrate_s
        report.target_rps = factor * report.capacity_rps
        report.rss_start_mb = service.rss() / 2**20

        rss_samples: list[float] = []

        async def sample_rss() -> None:
            while True:
                rss_samples.append(service.rss() / 2**20)
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample_rss())
        latencies: list[float] = []
        rejections: list[float] = []
        statuses: Counter[int] = Counter()
        await _open_loop(client, request, report.target_rps, duration_s, report, latencies,
                         rejections, statuses, max_in_flight)
        sampler.cancel()
        report.rss_end_mb = service.rss() / 2**20
        report.rss_mid_mb = rss_samples[len(rss_samples) // 2] if rss_samples else 0.0
        report.rss_max_mb = max(rss_samples + [report.rss_end_mb])

        report.ok, report.rejected_429 = statuses.pop(200, 0), statuses.pop(429, 0)
        report.server_errors_5xx = sum(v for k, v in statuses.items() if k >= 500)
        report.other_status = {str(k): v for k, v in sorted(statuses.items())}
        report.lost = report.sent - report.answered
        report.stale_retries = client.stale_retries
        report.accepted_rps = report.ok / duration_s
        report.p50_ms = percentile(latencies, 0.50) * 1000
        report.p99_ms = percentile(latencies, 0.99) * 1000
        report.max_ms = max(latencies, default=0.0) * 1000
        report.p99_429_ms = percentile(rejections, 0.99) * 1000

        ready, _, _ = await client.send(RawClient.build("GET", "/health/ready", b"", headers))
        after, _, _ = await client.send(request)
        report.healthy_after = ready == 200 and after == 200
    finally:
        client.close()
    return report


def run_overload(model_dir: Path | str, *, duration_s: float = 20.0, factor: float = 2.0,
                 queue_size: int = 64, max_batch_size: int = 32, texts: int = 8, words: int = 200,
                 calibrate_s: float = 3.0, num_threads: int = 1, max_in_flight: int = 512,
                 max_p99_ms: float | None = None, max_rss_growth_mb: float = 50.0,
                 service: LiveService | None = None, headers: dict[str, str] | None = None
                 ) -> Report:
    """Start a service (unless given one), overload it, check the result."""
    own = service is None
    if service is None:
        service = LiveService(model_dir, max_queue_size=queue_size, max_batch_size=max_batch_size,
                              num_threads=num_threads, log_level="warning").start()
    try:
        report = asyncio.run(_drive(service, duration_s=duration_s, factor=factor, texts=texts,
                                    words=words, calibrate_s=calibrate_s,
                                    max_in_flight=max_in_flight, headers=headers or {}))
    finally:
        if own:
            service.close()
    if max_p99_ms is None:  # from the rate it served at under overload (the machine may be shared)
        max_p99_ms = p99_bound_ms(min(report.capacity_rps, report.accepted_rps) or
                                  report.capacity_rps, texts, queue_size, max_batch_size)
    return check(report, max_p99_ms=max_p99_ms, max_rss_growth_mb=max_rss_growth_mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifact to serve (default: build one)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of overload")
    parser.add_argument("--factor", type=float, default=2.0, help="load / measured capacity")
    parser.add_argument("--queue-size", type=int, default=64, help="TEXTCLF_MAX_QUEUE_SIZE")
    parser.add_argument("--max-batch-size", type=int, default=32, help="TEXTCLF_MAX_BATCH_SIZE")
    parser.add_argument("--texts", type=int, default=8, help="texts per request")
    parser.add_argument("--words", type=int, default=200, help="words per text")
    parser.add_argument("--calibrate", type=float, default=3.0, help="seconds to measure capacity")
    parser.add_argument("--threads", type=int, default=1, help="TEXTCLF_NUM_THREADS")
    parser.add_argument("--max-p99-ms", type=float,
                        help="default: 3 x (queue + one batch) at the measured rate + 200 ms")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp:
        model_dir = args.model_dir or build_artifact(Path(tmp) / "model")
        report = run_overload(model_dir, duration_s=args.duration, factor=args.factor,
                              queue_size=args.queue_size, max_batch_size=args.max_batch_size,
                              texts=args.texts, words=args.words, calibrate_s=args.calibrate,
                              num_threads=args.threads, max_p99_ms=args.max_p99_ms,
                              max_rss_growth_mb=args.max_rss_growth_mb)
    print(report.summary())
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())

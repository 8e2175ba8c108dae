"""CPU cost per /predict request inside the app, without sockets or a load generator.

    python -m bench.asgi [--model-dir artifacts/default] [--concurrency 64] [--requests 5000]

Drives the ASGI app (middleware, routing, body parsing, tokenizing, batching, model, JSON)
from `--concurrency` coroutines in one event loop and reports CPU milliseconds per request
(process time, all threads; and the event loop thread's share) and wall-clock requests/s.
CPU time per request hardly depends on what else runs on the machine, so it is the figure to
compare code changes with on a shared box.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.common import request_texts
from service.config import Settings
from service.main import create_app


async def call(app, body: bytes) -> int:  # noqa: ANN001 - an ASGI app
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def load(app, bodies: list[bytes], concurrency: int,  # noqa: ANN001
               total: int) -> tuple[float, float, float]:
    counter = iter(range(total))
    failures = 0

    async def client(offset: int) -> None:
        nonlocal failures
        for i in counter:
            if await call(app, bodies[(i + offset) % len(bodies)]) != 200:
                failures += 1

    timing = await timed_clients([client(k) for k in range(concurrency)], total, 1000)
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return timing


async def timed_clients(clients: list[Coroutine[Any, Any, None]], total: int,
                        per_second: float) -> tuple[float, float, float]:
    """Run the clients together: (process CPU per request, requests/s, event-loop-thread CPU
    per request), CPU in 1/`per_second` seconds (1000: ms)."""
    wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
    await asyncio.gather(*clients)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loop = time.thread_time() - loop
    return cpu * per_second / total, total / wall, loop * per_second / total


async def run(args: argparse.Namespace) -> list[tuple[float, float, float]]:
    settings = Settings(model_dir=args.model_dir, device="cpu", num_threads=args.threads)
    app = create_app(settings)
    bodies = [orjson.dumps({"inputs": t}) for t in request_texts(30)]
    async with app.router.lifespan_context(app):
        await load(app, bodies, args.concurrency, args.requests // 5)  # warm-up
        return [await load(app, bodies, args.concurrency, args.requests)
                for _ in range(args.repeat)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (TEXTCLF_NUM_THREADS)")
    args = p.parse_args(argv)
    results = uvloop.run(run(args))
    print(f"concurrency {args.concurrency}: " + summary(results, "ms", 3))
    return 0


def summary(runs: list[tuple[float, float, float]], unit: str, digits: int) -> str:
    """Medians of (CPU per request, requests/s, event-loop CPU per request) over the runs."""
    cpu, rps, loop = (statistics.median(run[k] for run in runs) for k in range(3))
    return (f"{cpu:.{digits}f} CPU {unit}/request ({loop:.{digits}f} on the event loop thread), "
            f"{rps:.0f} requests/s (median of {len(runs)}; runs: "
            + ", ".join(f"{run[0]:.{digits}f}" for run in runs) + ")")


if __name__ == "__main__":
    sys.exit(main())

"""CPU per POST /predict through the server's own HTTP protocol, in-process and without sockets.

    python -m bench.lane [--model-dir artifacts/default] [--dtype bfloat16] [--connections 64]
                         [--requests 20000] [--repeat 3] [--no-model] [--inference-thread auto]

This is the path that answers /predict in production (service.protocol hands the request to
service.direct, or to service.fastlane: JSON, tokenizing, batching, the model, the response
bytes), driven through in-memory connections instead of TCP: `--connections` clients each send
one request, wait for its response and send the next (as wrk does). It reports CPU microseconds
per request (the whole process, and the event loop thread alone) and requests/s. Without the
kernel's loopback TCP and a load generator on the same cores, the figure is steadier than a wrk
run on a shared machine, so it is the one to compare code changes with.

`--no-model` replaces the forward pass by fixed outputs of the same shapes: the figure is then
the request path alone, and the difference to a run with the model is the model's share.
(bench.asgi measures the ASGI app, which serves every other route and /predict requests the
fast lane passes on.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import torch
import uvicorn
import uvloop
from uvicorn.server import ServerState

from bench.asgi import summary, timed_clients
from bench.common import request_texts
from service.config import Settings
from service.main import create_app
from service.predictor import PaddedBatch, Predictor
from service.protocol import ServiceHttpProtocol
from service.server import uvicorn_options
from service.state import service_state


class MemoryTransport(asyncio.Transport):
    """What the protocol needs of a TCP transport; `write` hands the response to the client."""

    def __init__(self) -> None:
        super().__init__()
        self.reply: asyncio.Future[bytes] | None = None
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request_bytes(body: bytes) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def without_model(predictor: Predictor) -> None:
    """Fixed outputs of the model's shapes instead of its forward pass (`--no-model`)."""
    features = predictor.compute(predictor.pad_batch([[1]]))[2].shape[1]
    classes, made = len(predictor.labels), {}

    def compute(batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = sum(int(ids.shape[0]) for ids in batch.ids)
        if rows not in made:
            logits = torch.zeros(rows, classes)
            made[rows] = (torch.softmax(logits, dim=1), logits, torch.zeros(rows, features))
        return made[rows]

    predictor.compute = compute  # type: ignore[method-assign]
    predictor.scripted = None  # so every pass goes through `compute`


async def load(protocols: list[tuple[ServiceHttpProtocol, MemoryTransport]],
               requests: list[bytes], total: int) -> tuple[float, float, float]:
    """Process CPU us per request, requests/s and event-loop-thread CPU us per request."""
    loop, counter, failures = asyncio.get_running_loop(), iter(range(total)), 0

    async def client(protocol: ServiceHttpProtocol, transport: MemoryTransport, offset: int) -> None:
        nonlocal failures
        for i in counter:
            transport.reply = loop.create_future()
            protocol.data_received(requests[(i + offset) % len(requests)])
            if not (await transport.reply).startswith(b"HTTP/1.1 200 "):
                failures += 1

    timing = await timed_clients([client(p, t, k * 7) for k, (p, t) in enumerate(protocols)],
                                 total, 1e6)
    if failures:
        raise RuntimeError(f"{failures} of {total} requests were not answered 200")
    return timing


async def measure(settings: Settings, connections: int, total: int, repeat: int,
                  model: bool = True) -> list[tuple[float, float, float]]:
    """`repeat` runs of `total` requests after a warm-up of a fifth of that."""
    app = create_app(settings)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    config.load()
    requests = [request_bytes(orjson.dumps({"inputs": text})) for text in request_texts(30)]
    async with app.router.lifespan_context(app):
        state = service_state(app)
        assert state is not None
        if not model:
            with state.use() as serving:
                without_model(serving.predictor)
        server_state, loop = ServerState(), asyncio.get_running_loop()
        protocols = []
        for _ in range(connections):
            protocol = ServiceHttpProtocol(config=config, server_state=server_state,
                                           app_state={}, _loop=loop)
            transport = MemoryTransport()
            protocol.connection_made(transport)
            protocols.append((protocol, transport))
        await load(protocols, requests, max(connections, total // 5))
        runs = [await load(protocols, requests, total) for _ in range(repeat)]
        for protocol, transport in protocols:
            transport.close()
            protocol.connection_lost(None)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-model", action="store_true", help="fixed outputs instead of the model")
    p.add_argument("--inference-thread", choices=["auto", "true", "false"], default="auto",
                   help="TEXTCLF_INFERENCE_THREAD (auto: as the service picks for 1 worker)")
    args = p.parse_args(argv)
    thread = {"auto": None, "true": True, "false": False}[args.inference_thread]
    settings = Settings(model_dir=args.model_dir, device="cpu", dtype=args.dtype, num_threads=1,
                        inference_thread=thread)
    runs = uvloop.run(measure(settings, args.connections, args.requests, args.repeat,
                              model=not args.no_model))
    label = "no model" if args.no_model else args.dtype
    print(f"{label}, {args.connections} connections: " + summary(runs, "us", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

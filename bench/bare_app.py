"""Reference point (not a peer): the floor of serving this model from Python. A bare asyncio +
httptools protocol, no ASGI, with textclf's own Predictor and Batcher, and nothing else: no
validation beyond `{"inputs": str}`, no limits, metrics, request ids or error answers (a bad
request drops the connection). What textclf's fast lane would cost with all of that removed.

    python -m bench.bare_app --port 8003 --model-dir artifacts/default [--workers N]

N processes each bind their own SO_REUSEPORT socket, so the kernel spreads connections.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
from pathlib import Path
from typing import cast

import httptools
import orjson
import torch
import uvloop
from prometheus_client import CollectorRegistry

from service.batcher import Batcher, JobResult
from service.inference import rank
from service.metrics import Metrics
from service.predictor import Predictor

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


class BareProtocol(asyncio.Protocol):
    def __init__(self, predictor: Predictor, batcher: Batcher) -> None:
        self.predictor, self.batcher = predictor, batcher
        self.parts: list[bytes] = []
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        body, self.parts = b"".join(self.parts), []
        if self.url != b"/predict":  # the readiness probe
            self.reply(b'{"status":"ok"}')
            return
        try:
            text = orjson.loads(body)["inputs"]
            encoded = self.predictor.encode(text)[: self.predictor.max_tokens]
        except (ValueError, KeyError, TypeError):
            self.transport.close()
            return
        asyncio.ensure_future(self.batcher.submit([encoded])).add_done_callback(self.answer)

    def answer(self, done: asyncio.Future[JobResult]) -> None:
        row = done.result().output.probabilities[0]
        self.reply(orjson.dumps(rank(row, self.predictor.labels, None)))

    def reply(self, payload: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(HEAD % len(payload) + payload)


async def serve(port: int, model_dir: Path) -> None:
    torch.set_num_threads(1)  # as textclf's default (service.server)
    predictor = Predictor.load(model_dir, torch.device("cpu"))
    batcher = Batcher(predictor, Metrics(CollectorRegistry()), 32, 0.002, 1024, "auto")
    batcher.start()
    gc.collect()
    gc.freeze()  # as service.state.settle_heap
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    server = await asyncio.get_running_loop().create_server(
        lambda: BareProtocol(predictor, batcher), sock=sock)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8003)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    args = p.parse_args()
    for _ in range(args.workers - 1):
        if os.fork() == 0:  # children exit with the process group (bench.common.Processes)
            break
    uvloop.run(serve(args.port, args.model_dir))


if __name__ == "__main__":
    main()

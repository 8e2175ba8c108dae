"""Run the app under uvicorn: one process, or TEXTCLF_WORKERS processes sharing the port."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import tempfile
from http import HTTPStatus
from types import FrameType

import orjson
import torch
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.errors import STATUS, ErrorType
from service.logs import configure_logging, log_config


class Server(uvicorn.Server):
    """uvicorn.Server whose SIGTERM/SIGINT first turns readiness to 503, then drains, and whose
    process then exits 0.

    uvicorn's own handle_exit records the signal and re-raises it once the drain is over, so the
    process would die of SIGTERM (status 143) after a clean shutdown. A drain that completed is a
    clean exit here: the flags are set as uvicorn does (a second SIGINT forces the exit), without
    recording the signal."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = getattr(self.config, "loaded_app", None)
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)  # unwrap uvicorn's middleware proxies
        state = getattr(getattr(app, "state", None), "textclf", None)
        if state is not None:
            state.begin_shutdown()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


MAX_HEAD_BYTES = 64 * 1024  # request line + headers
HEAD_TIMEOUT_S = 10.0  # from a connection's (or a request's) first byte to the end of its headers


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head, in size and in time.

    httptools itself buffers a request line and headers of any size (h11_max_incomplete_event_size
    only applies to h11, which is ~40% slower here): 20 connections sending 5 MB of headers each
    cost 100 MB of memory. Here a head over MAX_HEAD_BYTES gets 431 and the connection is closed,
    and a connection that has not finished its headers HEAD_TIMEOUT_S after it started (slowloris:
    connect, then send nothing or a byte now and then) is closed. Bodies are not limited here
    (TEXTCLF_MAX_BODY_BYTES is checked while reading them)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head, self._head_bytes = True, 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # what comes next is the next request's head
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and self._in_head and not self.transport.is_closing():
            room = MAX_HEAD_BYTES - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            part, data = data[:room], data[room:]  # feed what fits: it may end the head
            self._head_bytes += len(part)
            super().data_received(part)
            if self._in_head:
                self._reject_head()
                return
        if data and not self.transport.is_closing():
            super().data_received(data)

    def _reject_head(self) -> None:
        self.transport.write(raw_error(ErrorType.headers_too_large,
                                       f"request line and headers are over {MAX_HEAD_BYTES} bytes"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse the request: our JSON error shape, not uvicorn's text."""
        self.transport.write(raw_error(ErrorType.bad_request, msg))
        self.transport.close()


def raw_error(error_type: ErrorType, message: str) -> bytes:
    """A complete HTTP/1.1 error response, for the protocol layer (no ASGI app involved); the
    connection is closed after it."""
    status = STATUS[error_type]
    body = orjson.dumps({"error": message, "error_type": error_type.value})
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def _uvicorn_options(settings: Settings) -> dict:
    return {
        "host": settings.host, "port": settings.port, "loop": "uvloop",
        "http": LimitedHttpToolsProtocol,
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": False, "timeout_graceful_shutdown": max(1, math.ceil(settings.shutdown_timeout_s)),
        "timeout_keep_alive": 5, "limit_concurrency": 4096, "backlog": 2048,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        # workers: uvicorn kills a worker that does not answer its ping within this; importing
        # torch on a busy machine took longer than uvicorn's 5 s, so the first worker was killed
        # and started again
        "timeout_worker_healthcheck": 60,
    }


# Torch intra-op threads per process when TEXTCLF_NUM_THREADS is unset. One: the batcher already
# gives the model one core of its own (the event loop runs on another), and a second OpenMP
# thread then only competes with the event loop and the other workers: on 2 cores it made a
# 32-text forward pass several times slower (bench/inprocess.py, bench/serving.py).
DEFAULT_TORCH_THREADS = 1


def _thread_default(settings: Settings) -> Settings:
    if settings.num_threads is not None:
        return settings
    os.environ["TEXTCLF_NUM_THREADS"] = str(DEFAULT_TORCH_THREADS)  # workers read it again
    return settings.model_copy(update={"num_threads": DEFAULT_TORCH_THREADS})


def serve(settings: Settings, device: torch.device) -> int:
    configure_logging(settings.log_level, settings.log_format)
    settings = _thread_default(settings)
    if settings.workers == 1 and settings.multiproc_dir is not None:
        # one process keeps its metrics in memory: multiprocess files need
        # PROMETHEUS_MULTIPROC_DIR before prometheus-client is imported (see _serve_workers)
        settings = settings.model_copy(update={"multiproc_dir": None})
    if settings.workers > 1:
        return _serve_workers(settings)
    from service.main import create_app

    config = uvicorn.Config(create_app(settings), **_uvicorn_options(settings))
    server = Server(config)
    server.run()
    return 0 if server.started else 1


def _serve_workers(settings: Settings) -> int:
    """N processes; metrics go through prometheus-client's multiprocess files, so a scrape of
    any worker reports the sum over all of them."""
    directory = settings.multiproc_dir or tempfile.mkdtemp(prefix="textclf-metrics-")
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # stale files from an earlier run would add up
        os.remove(os.path.join(directory, name))
    # Workers are new processes: they read these at import time (prometheus-client) and in
    # Settings (TEXTCLF_MULTIPROC_DIR).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    os.environ["TEXTCLF_MULTIPROC_DIR"] = str(directory)
    uvicorn.run("service.main:create_app", factory=True, workers=settings.workers,
                **_uvicorn_options(settings))
    return 0

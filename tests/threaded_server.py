"""A live server for tests: uvicorn with production options (service.server) in a thread of
this process, so a test can patch a module or read the metrics registry; 127.0.0.1 only."""

from __future__ import annotations

import http.client
import threading
import time

import uvicorn
from prometheus_client import CollectorRegistry

import service.server
from bench.common import free_port
from service.config import Settings
from service.main import create_app


class ThreadedServer:
    """uvicorn with production options (service.server) in a thread of this process."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, **overrides: object) -> None:
        options = service.server.uvicorn_options(settings)
        options.update(port=free_port(), log_config=None)
        options.update(overrides)
        self.port = options["port"]
        self.app = create_app(settings, registry)
        self.server = service.server.Server(uvicorn.Config(self.app, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read(), time.monotonic() - start
        finally:
            conn.close()

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read(), time.monotonic() - start
        finally:
            conn.close()

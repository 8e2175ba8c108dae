"""service/balance.py in real servers: a shed connection gets its whole response, then
`connection: close`, on the fast lane and on the app's path, never with a pipelined request
behind it; and two workers even out a pool of connections opened in one burst."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import build_artifact
from prometheus_client import CollectorRegistry
from raw_http import exchange, request
from threaded_server import ThreadedServer

from bench.balance import established
from bench.live import LiveService
from service.balance import share_limit
from service.config import Settings


class AlwaysShed:
    def __init__(self) -> None:
        self.closes = 0

    def attach(self, connections: object) -> None:
        pass

    def should_close(self) -> bool:
        return True

    def closed(self) -> None:
        self.closes += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    model = build_artifact(tmp_path_factory.mktemp("balance") / "model")
    live = ThreadedServer(Settings(model_dir=model, device="cpu"), CollectorRegistry())
    with live:
        live.app.state.textclf.balance = AlwaysShed()  # read by each new connection
        yield live


BODY = b'{"inputs": "the team won it"}'
PREDICT = request(BODY, extra="")
INFO = b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.integration
@pytest.mark.parametrize("request_bytes", [PREDICT, INFO], ids=["fast lane", "app"])
def test_a_shed_connection_gets_its_whole_response_then_close(server: ThreadedServer,
                                                              request_bytes: bytes) -> None:
    before = server.app.state.textclf.balance.closes
    [(status, headers, body, closed)] = exchange(server.port, request_bytes)
    assert server.app.state.textclf.balance.closes == before + 1
    assert status == 200 and len(body) == int(headers["content-length"])
    assert headers["connection"] == "close" and closed  # and nothing after the one response


@pytest.mark.integration
@pytest.mark.parametrize("request_bytes", [PREDICT, INFO], ids=["fast lane", "app"])
def test_pipelined_requests_are_all_answered_before_the_close(server: ThreadedServer,
                                                              request_bytes: bytes) -> None:
    before = server.app.state.textclf.balance.closes
    replies = exchange(server.port, request_bytes * 3, count=3)
    assert server.app.state.textclf.balance.closes == before + 1  # the two undone do not count
    assert [status for status, *_ in replies] == [200] * 3
    assert [headers.get("connection") for _, headers, _, _ in replies] == [None, None, "close"]
    assert replies[-1][3]  # closed after the last


CONNECTIONS = 16


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


@pytest.mark.integration
def test_two_workers_even_out_a_pool_opened_in_a_burst(tmp_path: Path) -> None:
    """16 keep-alive connections opened at once, then used in a loop: whatever the kernel's
    first split, within a few seconds neither worker holds more than its share + slack."""
    with LiveService(build_artifact(tmp_path / "model"), workers=2, multiproc_dir=tmp_path / "m",
                     log_level="warning", startup_timeout_s=120) as live:
        time.sleep(1.0)  # /health/ready came from one worker: let the other finish starting
        pool = [http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
                for _ in range(CONNECTIONS)]
        for conn in pool:
            conn.connect()
        stop = threading.Event()
        statuses: list[int] = []

        def use(conn: http.client.HTTPConnection) -> None:
            while not stop.is_set():  # http.client reopens after a `connection: close`
                conn.request("POST", "/predict", BODY, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)

        threads = [threading.Thread(target=use, args=(conn,)) for conn in pool]
        for thread in threads:
            thread.start()
        time.sleep(4.0)
        held = sorted(established(live.port, all_pids()).values(), reverse=True)[:2]
        stop.set()
        for thread in threads:
            thread.join(30)
        for conn in pool:
            conn.close()
    assert set(statuses) == {200}
    assert sum(held) == CONNECTIONS and held[0] <= share_limit(held[0], held[1:]), held

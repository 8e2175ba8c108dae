"""service/protocol.py and the live server around it: limits on the request head (431,
slowloris), the body timeout (408), and refusals beyond uvicorn's concurrency limit.

uvicorn runs in a thread of this process with production options (service.server), so a test
can patch a constant or read the metrics registry; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import read_until_closed, sample
from prometheus_client import CollectorRegistry
from threaded_server import ThreadedServer

import service.httpbase
import service.protocol
import service.server
from service.config import Settings


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    from conftest import build_artifact

    model = build_artifact(tmp_path_factory.mktemp("threaded") / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.httpbase, "HEAD_TIMEOUT_S", 1.0)
        settings = Settings(model_dir=model, device="cpu", body_timeout_s=BODY_TIMEOUT_S)
        with ThreadedServer(settings, CollectorRegistry()) as server:
            yield server


BODY_TIMEOUT_S = 4.0  # the threaded server's TEXTCLF_BODY_TIMEOUT_S


@pytest.mark.integration
def test_beyond_the_concurrency_limit_the_refusal_is_json(tmp_path: Path) -> None:
    """Beyond limit_concurrency uvicorn would answer a plain-text 503 itself; here the app
    answers the service's 429 `overloaded` with Retry-After, counted and with a request id."""
    from conftest import build_artifact

    settings = Settings(model_dir=build_artifact(tmp_path / "model"), device="cpu")
    registry = CollectorRegistry()
    # limit 1: the request's own connection already reaches it
    with ThreadedServer(settings, registry, limit_concurrency=1) as server:
        sock = _raw(server.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(sock)  # the server closes the connection after it
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429"), head
    assert b"retry-after: 1" in head.lower() and b"content-type: application/json" in head
    assert b"x-request-id: " in head  # answered by the app's middleware, like any other reply
    assert sample(registry, "textclf_requests_total", endpoint="/health", status="429") == 1
    assert json.loads(body) == {"error": "the server is at its concurrency limit; retry later",
                                "error_type": "overloaded"}


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.integration
def test_a_withheld_body_gets_408_and_the_connection_closed(threaded: ThreadedServer) -> None:
    body = b'{"inputs": "the team won the cup final"}'
    socks = []
    for path in ("/predict", "/tokenize"):  # the fast path and a normal route
        sock = _raw(threaded.port)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        socks.append(sock)  # then nothing more
    start = time.monotonic()
    for sock in socks:
        reply = read_until_closed(sock)  # until the server closes
        sock.close()
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert json.loads(payload)["error_type"] == "request_timeout"
    assert BODY_TIMEOUT_S - 0.5 < time.monotonic() - start < BODY_TIMEOUT_S + 5
    assert threaded.get("/health/ready")[0] == 200


@pytest.mark.integration
def test_huge_headers_get_431_and_the_service_stays_up(threaded: ThreadedServer) -> None:
    ok = "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Fill: " + "a" * 60_000 + "\r\n\r\n"
    sock = _raw(threaded.port)
    sock.sendall(ok.encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 200"), "a 60 kB head is still fine"
    sock.close()

    heads = [b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
             b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
             + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"\r\n",
             b"GET /health/live?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    for head in heads:
        sock = _raw(threaded.port)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)  # (closed on us while sending: also a refusal)
        reply = read_until_closed(sock)
        sock.close()
        if reply:
            assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
            body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert body["error_type"] == "headers_too_large"

    # many at once, each sending megabytes of header: refused early, nothing piles up
    def flood() -> None:
        sock = _raw(threaded.port)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Big: ")
            for _ in range(50):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass
        finally:
            sock.close()

    threads = [threading.Thread(target=flood) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    status, _, seconds = threaded.get("/health/ready")
    assert status == 200 and seconds < 2


@pytest.mark.integration
def test_slow_clients_do_not_take_the_service_down(threaded: ThreadedServer) -> None:
    """50 clients that send headers, then trickle the body a byte at a time; and 20 that
    connect and never finish their headers. Others are served as usual meanwhile; the
    silent ones are cut off after HEAD_TIMEOUT_S (1 s here)."""
    body = json.dumps({"inputs": "the team won the cup final"}).encode()
    tricklers = []
    for _ in range(50):
        sock = _raw(threaded.port)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:1])
        tricklers.append(sock)
    silent = []
    for _ in range(20):
        sock = _raw(threaded.port)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost:")
        silent.append(sock)

    for i in range(1, 4):  # trickle on while others are served
        for sock in tricklers:
            sock.sendall(body[i: i + 1])
        status, _, seconds = threaded.post("/predict", body)
        assert status == 200 and seconds < 1.0, (status, seconds)
        time.sleep(0.3)

    time.sleep(1.0)  # past HEAD_TIMEOUT_S: the silent ones are gone
    for sock in silent:
        sock.settimeout(5)
        assert read_until_closed(sock) == b""  # closed by the server, nothing sent
        sock.close()
    # the tricklers were not cut off by the head timer (their headers were complete) and,
    # within BODY_TIMEOUT_S, finish fine
    for sock in tricklers:
        sock.sendall(body[4:])
    for sock in tricklers:
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        response.read()
        sock.close()
    assert threaded.get("/health/ready")[0] == 200

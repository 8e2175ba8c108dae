"""Overload, limits, slow and hostile clients, API key, privacy of inputs, deployment hardening.

Live servers listen on 127.0.0.1 only: `python -m service` subprocesses (bench/overload.py's
LiveService) and, where a test needs to patch a constant or read the metrics registry, uvicorn
in a thread of this process with the same options as production (service.server).
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from conftest import read_until_closed, sample
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

import service.protocol
import service.server
from bench import live
from bench.common import free_port
from bench.overload import run_overload
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
KEY = "reliability-key"




def _error(response: object, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body


# ----------------------------------------------------------------------------- overload

@pytest.mark.integration
def test_overload_only_200_and_429_bounded_latency(tmp_path: Path) -> None:
    """bench/overload.py, short: twice the measured capacity for 5 s."""
    model = live.build_artifact(tmp_path / "model")
    report = run_overload(model, duration_s=5, calibrate_s=2)
    print("\n" + report.summary())
    assert not report.failures, report.summary()
    assert report.server_errors_5xx == 0 and report.lost == 0
    assert report.ok > 0 and report.rejected_429 > 0


# ----------------------------------------------------------------------------- limits

LIMITS = {"max_body_bytes": 4096, "max_client_batch": 4, "max_input_chars": 200}


@pytest.fixture
def limited(settings_factory, registry: CollectorRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings_factory(**LIMITS), registry)) as client:
        yield client


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i: i + size]


@pytest.mark.parametrize("path", ["/predict", "/embed"])
def test_limits_hold_before_any_model_work(limited: TestClient, registry: CollectorRegistry,
                                           path: str) -> None:
    """Body size, inputs per request, characters per input and tokens are refused before the
    model runs: the batch-size histogram does not move."""
    batches = sample(registry, "textclf_batch_size_count")
    big = json.dumps({"inputs": "word " * 1000}).encode()  # ~5 kB > 4096
    _error(limited.post(path, content=big, headers={"content-type": "application/json"}),
           413, "payload_too_large")
    # no Content-Length (chunked): counted while read
    _error(limited.post(path, content=_chunks(big), headers={"content-type": "application/json"}),
           413, "payload_too_large")
    _error(limited.post(path, json={"inputs": ["a text"] * 5}), 413, "payload_too_large")
    _error(limited.post(path, json={"inputs": "x" * 201}), 413, "payload_too_large")
    _error(limited.post(path, json={"inputs": "goal " * 17, "truncate": False}), 422, "validation")
    assert sample(registry, "textclf_batch_size_count") == batches
    # and at the limits themselves, it works
    assert limited.post(path, json={"inputs": ["goal " * 17] * 4}).status_code == 200
    assert sample(registry, "textclf_batch_size_count") == batches + 1


def test_tokenize_limits(limited: TestClient) -> None:
    _error(limited.post("/tokenize", json={"inputs": ["a"] * 5}), 413, "payload_too_large")
    _error(limited.post("/tokenize", content=b"[" * 5000, headers={"content-type": "application/json"}),
           413, "payload_too_large")


class ThreadedServer:
    """uvicorn with production options (service.server) in a thread of this process."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, **overrides: object) -> None:
        options = service.server._uvicorn_options(settings)
        options.update(port=free_port(), log_config=None)
        options.update(overrides)
        self.port = options["port"]
        self.server = service.server.Server(uvicorn.Config(create_app(settings, registry), **options))
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


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    from conftest import build_artifact

    model = build_artifact(tmp_path_factory.mktemp("threaded") / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.protocol, "HEAD_TIMEOUT_S", 1.0)
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


# ----------------------------------------------------------------------------- API key

@pytest.fixture
def keyed(settings_factory, registry: CollectorRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings_factory(api_key=KEY), registry)) as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]},
                                     {"Authorization": f"Bearer {KEY}x"},
                                     {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}])
def test_api_key_is_required(keyed: TestClient, headers: dict) -> None:
    for method, path in [("POST", "/predict"), ("POST", "/tokenize"), ("GET", "/info"),
                         ("POST", "/admin/reload"), ("GET", "/openapi.json")]:
        response = keyed.request(method, path, json={"inputs": "a goal"}, headers=headers)
        _error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                                     {"Authorization": f"bearer {KEY}"}])
def test_api_key_works_both_ways(keyed: TestClient, headers: dict) -> None:
    assert keyed.post("/predict", json={"inputs": "a goal"}, headers=headers).status_code == 200
    assert keyed.get("/info", headers=headers).status_code == 200


def test_health_and_metrics_need_no_key(keyed: TestClient) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/metrics"):
        assert keyed.get(path).status_code == 200


def test_api_key_compared_in_constant_time() -> None:
    import service.middleware as middleware

    source = inspect.getsource(middleware._authorised)
    assert "hmac.compare_digest(" in source
    assert "== api_key" not in source and "api_key ==" not in source


# ----------------------------------------------------------------------------- privacy

MARKER = "zq7secretmarker"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of our loggers and uvicorn's, whatever propagation an earlier dictConfig
    (service.logs) left them with."""
    loggers = [logging.getLogger(name) for name in ("textclf", "uvicorn", "uvicorn.error",
                                                     "uvicorn.access", "fastapi", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(caplog.handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(caplog.handler)
            lg.setLevel(level)


def _send_marked(client: TestClient) -> None:
    text = f"the goal {MARKER} was late"
    assert client.post("/predict", json={"inputs": text}).status_code == 200
    assert client.post("/predict", content=text.encode(),
                       headers={"content-type": "text/plain"}).status_code == 200
    assert client.post("/embed", json={"inputs": [text]}).status_code == 200
    assert client.post("/tokenize", json={"inputs": text}).status_code == 200
    assert client.get("/embed", params={"word": MARKER}).status_code == 200
    # refused ones too: validation, malformed JSON, too long
    client.post("/predict", json={"inputs": text, "top_k": "x"})
    client.post("/predict", content=f'{{"inputs": "{MARKER}"', headers={"content-type": "application/json"})
    client.post("/predict", json={"inputs": text * 2000})


def test_inputs_are_not_logged_by_default(settings_factory, registry: CollectorRegistry,
                                          all_logs: pytest.LogCaptureFixture) -> None:
    settings = settings_factory(log_level="debug")
    assert settings.log_inputs is False
    with TestClient(create_app(settings, registry)) as client:
        _send_marked(client)
    service_records = [r for r in all_logs.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name.startswith("textclf") for r in service_records), "capture sees the service"
    for record in service_records:  # (httpx is the test client: it logs the URLs it calls)
        assert MARKER not in record.getMessage(), record.getMessage()
    assert service.server._uvicorn_options(settings)["access_log"] is False  # no query strings


def test_inputs_are_logged_when_asked(settings_factory, registry: CollectorRegistry,
                                      all_logs: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(settings_factory(log_inputs=True), registry)) as client:
        assert client.post("/predict", json={"inputs": f"a {MARKER}"}).status_code == 200
    assert any(MARKER in record.getMessage() for record in all_logs.records)


# ----------------------------------------------------------------------------- deployment

def _no_root(user: object) -> bool:
    return user is not None and str(user).split(":")[0] not in ("0", "root", "")


def test_compose_runs_non_root_with_read_only_root_filesystem() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api_services = {name: svc for name, svc in compose["services"].items()
                    if "textclf" in str(svc.get("image", "")) or "build" in svc}
    assert api_services, "no textclf service in docker-compose.yml"
    for name, svc in compose["services"].items():
        assert _no_root(svc.get("user")), f"{name}: user {svc.get('user')!r}"
        assert svc.get("read_only") is True, f"{name}: read_only is not true"
    for name, svc in api_services.items():
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert "ALL" in svc.get("cap_drop", []), name


def test_k8s_runs_non_root_with_read_only_root_filesystem() -> None:
    deployments = sorted((ROOT / "deploy" / "k8s").glob("deployment*.yaml"))
    assert deployments, "no deploy/k8s/deployment*.yaml"
    for path in deployments:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            pod_ctx = pod.get("securityContext", {})
            for container in pod["containers"] + pod.get("initContainers", []):
                ctx = {**pod_ctx, **container.get("securityContext", {})}
                where = f"{path.name}: {container['name']}"
                assert ctx.get("runAsNonRoot") is True, where
                assert ctx.get("runAsUser", 1) != 0, where
                assert container.get("securityContext", {}).get("readOnlyRootFilesystem") is True, where
                assert container["securityContext"].get("allowPrivilegeEscalation") is False, where


def test_image_runs_as_non_root() -> None:
    users = [line.split(None, 1)[1].strip() for line in
             (ROOT / "Dockerfile").read_text().splitlines() if line.strip().upper().startswith("USER ")]
    assert users and _no_root(users[-1]), users

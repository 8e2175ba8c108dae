"""Overload, limits, API key, privacy of inputs, deployment hardening. (Slow and hostile clients
against the protocol layer: tests/test_protocol.py.)

The overload test drives a `python -m service` subprocess on 127.0.0.1 (bench/live.py).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import sample
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

import service.protocol
import service.server
from bench import live
from bench.overload import run_overload
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

    source = inspect.getsource(middleware.authorised)
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
    assert service.server.uvicorn_options(settings)["access_log"] is False  # no query strings


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

"""Every client error is 4xx with one JSON shape; nothing a client sends gives a 500."""

import pytest

from service.config import Settings

JSON = {"content-type": "application/json"}
PLAIN = {"content-type": "text/plain"}
XML = {"content-type": "application/xml"}

CASES = [
    ("empty string", {"json": {"inputs": ""}}, 400, "empty"),
    ("blank string", {"json": {"inputs": "   "}}, 400, "empty"),
    ("empty list", {"json": {"inputs": []}}, 400, "empty"),
    ("null inputs", {"json": {"inputs": None}}, 422, "validation"),
    ("number inputs", {"json": {"inputs": 5}}, 422, "validation"),
    ("list of numbers", {"json": {"inputs": [1, 2]}}, 422, "validation"),
    ("missing inputs", {"json": {}}, 422, "validation"),
    ("unknown field", {"json": {"inputs": "a", "bogus": 1}}, 422, "validation"),
    ("negative top_k", {"json": {"inputs": "a", "top_k": -1}}, 422, "validation"),
    ("absurd top_k", {"json": {"inputs": "a", "top_k": 10**12}}, 422, "validation"),
    ("string truncate", {"json": {"inputs": "a", "truncate": "yes"}}, 422, "validation"),
    ("malformed json", {"content": b'{"inputs": ', "headers": JSON}, 422, "validation"),
    ("array body", {"json": ["a"]}, 422, "validation"),
    ("invalid utf-8", {"content": b'{"inputs": "\xff\xfe"}', "headers": JSON}, 422, "validation"),
    ("invalid utf-8 plain", {"content": b"\xff\xfe", "headers": PLAIN}, 422, "validation"),
    ("deep nesting", {"content": b"[" * 5000 + b"]" * 5000, "headers": JSON}, 422, "validation"),
    ("wrong media type", {"content": b"<x/>", "headers": XML}, 415, "unsupported_media_type"),
    ("too many inputs", {"json": {"inputs": ["a"] * 65}}, 413, "payload_too_large"),
    ("text too long", {"json": {"inputs": "a" * 20_001}}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(("name", "request_kwargs", "status", "error_type"), CASES,
                         ids=[c[0] for c in CASES])
def test_predict_errors(client, name, request_kwargs, status, error_type):
    reply = client.post("/predict", **request_kwargs)
    assert reply.status_code == status, reply.text
    assert reply.json().keys() == {"error", "error_type"}
    assert reply.json()["error_type"] == error_type


def test_body_over_the_limit_is_413(settings_factory, registry):
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(settings_factory(max_body_bytes=2048), registry)) as client:
        reply = client.post("/predict", json={"inputs": "word " * 1000})
        assert reply.status_code == 413 and reply.json()["error_type"] == "payload_too_large"


def test_not_found_and_method_not_allowed_use_the_error_shape(client):
    assert client.get("/nope").json() == {"error": "Not Found", "error_type": "not_found"}
    reply = client.get("/predict")
    assert reply.status_code == 405 and reply.json()["error_type"] == "method_not_allowed"


def test_embed_errors(client):
    assert client.post("/embed", json={"words": []}).status_code == 422
    assert client.post("/embed", json={"neither": 1}).status_code == 422
    assert client.post("/embed", json={"words": ["a"], "neighbors": 10_000}).status_code == 422
    assert client.get("/embed").status_code == 422
    assert client.post("/embed", json={"inputs": ""}).status_code == 400


def test_unexpected_errors_are_500_without_internals(settings_factory, registry):
    from fastapi.testclient import TestClient

    from service.main import create_app

    def explode(*_args):
        raise RuntimeError("secret internal detail")

    app = create_app(settings_factory(), registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        predictor = app.state.textclf.serving.predictor
        predictor.compute = predictor.launch = explode  # wherever the pass runs
        reply = client.post("/predict", json={"inputs": "goal"})
        assert reply.status_code == 500
        assert reply.json() == {"error": "internal server error", "error_type": "internal"}
        assert len(reply.headers["x-request-id"]) == 32
        app.state.textclf.serving.predictor.word_vectors = explode  # a route off the fast path
        other = client.get("/embed", params={"word": "goal"})
        assert other.status_code == 500 and other.json()["error_type"] == "internal"
        assert other.headers["x-request-id"] != reply.headers["x-request-id"]
        assert "secret" not in reply.text + other.text
        assert client.get("/health/ready").status_code == 200  # one failure does not stop it
    from tests.conftest import sample
    assert sample(registry, "textclf_requests_total", endpoint="/predict", status="500") == 1
    assert sample(registry, "textclf_requests_total", endpoint="/embed", status="500") == 1


def test_api_key(settings_factory, registry):
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(settings_factory(api_key="s3cret"), registry)) as client:
        denied = client.post("/predict", json={"inputs": "goal"})
        assert denied.status_code == 401 and denied.json()["error_type"] == "unauthorized"
        assert client.post("/predict", json={"inputs": "goal"},
                           headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/predict", json={"inputs": "goal"},
                           headers={"authorization": "Bearer s3cret"}).status_code == 200
        mixed = {"x-api-key": "s3cret", "authorization": "Bearer wrong"}  # one right, one wrong
        assert client.post("/predict", json={"inputs": "goal"}, headers=mixed).status_code == 401
        assert client.post("/predict", json={"inputs": "goal"},
                           headers={"authorization": "Basic s3cret"}).status_code == 401
        assert client.get("/info", headers={"x-api-key": "s3cret"}).status_code == 200
        assert client.get("/health/ready").status_code == 200  # health and metrics stay open
        assert client.get("/metrics").status_code == 200


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="device"):
        Settings(device="gpu7")
    with pytest.raises(ValueError, match="max_batch_size"):
        Settings(max_batch_size=0)

"""service/direct.py: what it takes, it reads as httptools and PredictRequest would; the rest
it leaves untouched. (tests/test_fastlane.py checks live that its answers are the app's.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httptools
import pytest
from conftest import build_artifact
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from raw_http import exchange, request
from threaded_server import ThreadedServer

from service.config import Settings
from service.direct import Inputs, parse_head, read_inputs
from service.schemas import PredictRequest

BODY = b'{"inputs": "a b"}'


def head_of(*lines: str, body: bytes = BODY) -> bytes:
    return ("\r\n".join(("POST /predict HTTP/1.1", *lines)) + "\r\n\r\n").encode("latin-1") + body


def httptools_headers(data: bytes) -> list[tuple[bytes, bytes]]:
    """The headers as uvicorn puts them in its scope (names lower case)."""
    headers: list[tuple[bytes, bytes]] = []

    class Collect:
        def on_header(self, name: bytes, value: bytes) -> None:
            headers.append((name.lower(), value))

    httptools.HttpRequestParser(Collect()).feed_data(data)
    return headers


@pytest.mark.parametrize("data", [
    head_of("Host: x", "Content-Type: application/json", f"Content-Length: {len(BODY)}"),
    head_of(f"content-length:{len(BODY)}", "X-Request-Id:   abc  ", "Accept:"),
    head_of("Host: x", "Connection: keep-alive", f"Content-Length: {len(BODY)}"),
])
def test_a_plain_request_is_read_as_httptools_reads_it(data: bytes) -> None:
    head = parse_head(data)
    assert head is not None and head.keep_alive and head.body == BODY
    assert head.headers == httptools_headers(data)  # names, and values with trailing space


def test_connection_close_is_kept() -> None:
    head = parse_head(head_of("Connection: Close", f"Content-Length: {len(BODY)}"))
    assert head is not None and not head.keep_alive


@pytest.mark.parametrize("name, data", [
    ("another path", head_of(f"Content-Length: {len(BODY)}").replace(b"/predict", b"/predicts")),
    ("a query string", head_of(f"Content-Length: {len(BODY)}").replace(b"/predict", b"/predict?x")),
    ("HTTP/1.0", head_of(f"Content-Length: {len(BODY)}").replace(b"HTTP/1.1", b"HTTP/1.0")),
    ("GET", b"GET" + head_of(f"Content-Length: {len(BODY)}")[4:]),
    ("no length", head_of("Host: x")),
    ("a short body (more to come)", head_of(f"Content-Length: {len(BODY) + 1}")),
    ("a request pipelined behind", head_of(f"Content-Length: {len(BODY)}") * 2),
    ("two lengths", head_of(f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY)}")),
    ("a signed length", head_of(f"Content-Length: +{len(BODY)}")),
    ("chunked", head_of("Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}")),
    ("expect", head_of("Expect: 100-continue", f"Content-Length: {len(BODY)}")),
    ("upgrade", head_of("Connection: upgrade", "Upgrade: h2c", f"Content-Length: {len(BODY)}")),
    ("two connection options", head_of("Connection: keep-alive, x", f"Content-Length: {len(BODY)}")),
    ("a folded header", head_of("X-A: 1", " 2", f"Content-Length: {len(BODY)}")),
    ("space before the colon", head_of("X-A : 1", f"Content-Length: {len(BODY)}")),
    ("a byte over 0x7e", head_of("X-A: caf\xe9", f"Content-Length: {len(BODY)}")),
    ("a control byte", head_of("X-A: a\x01b", f"Content-Length: {len(BODY)}")),
    ("the head not ended", head_of(f"Content-Length: {len(BODY)}", body=b"")[:-2]),
])
def test_anything_else_is_left(name: str, data: bytes) -> None:
    assert parse_head(data) is None


# bodies PredictRequest takes or refuses; read_inputs must never take one that it refuses, nor
# read one differently
BODIES = [
    {"inputs": "a b"}, {"inputs": ["a", "b c"]}, {"inputs": []}, {"inputs": [""]},
    {"inputs": "a", "raw_scores": True, "truncate": False, "truncation_direction": "Left",
     "top_k": 2},
    {"inputs": "a", "top_k": None}, {"inputs": "a", "top_k": 10_000}, {"inputs": "a", "top_k": 0},
    {"inputs": "a", "top_k": 10_001}, {"inputs": "a", "top_k": True}, {"inputs": "a", "top_k": 2.0},
    {"inputs": "a", "top_k": "2"}, {"inputs": "a", "raw_scores": 1}, {"inputs": "a", "truncate": "yes"},
    {"inputs": "a", "truncation_direction": "up"}, {"inputs": "a", "truncation_direction": ["left"]},
    {"inputs": "a", "truncation_direction": "right\n"}, {"inputs": 5}, {"inputs": None},
    {"inputs": ["a", 1]}, {"inputs": {"a": 1}}, {"inputs": "a", "colour": "red"}, {}, [], "a b", 3,
]


@pytest.mark.parametrize("body", BODIES, ids=[json.dumps(b)[:40] for b in BODIES])
def test_inputs_are_what_predict_request_reads(body: object) -> None:
    taken = read_inputs("application/json", json.dumps(body).encode())
    try:
        model = PredictRequest.model_validate(body)
    except ValidationError:
        assert taken is None
        return
    if taken is None:
        return  # left to the route (which reads it the same way)
    texts = [model.inputs] if isinstance(model.inputs, str) else model.inputs
    assert taken == Inputs(texts, isinstance(model.inputs, str), model.raw_scores, model.truncate,
                           model.truncation_direction.lower() == "left", model.top_k)


def test_plain_text_and_media_types() -> None:
    assert read_inputs("text/plain", "caf\u00e9 ok".encode()) == Inputs(["caf\u00e9 ok"], True)
    assert read_inputs("text/plain", b"\xff") is None  # not UTF-8: the route's 422
    assert read_inputs("application/problem+json", BODY) == Inputs(["a b"], True)
    assert read_inputs("", BODY) == Inputs(["a b"], True)  # no content type: JSON, as the route
    assert read_inputs("application/xml", BODY) is None
    assert read_inputs("application/json", b'{"inputs": "a') is None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, ThreadedServer]]:
    model = build_artifact(tmp_path_factory.mktemp("direct") / "model")
    on = ThreadedServer(Settings(model_dir=model, device="cpu"), CollectorRegistry())
    off = ThreadedServer(Settings(model_dir=model, device="cpu", fast_predict=False),
                         CollectorRegistry())
    with on, off:
        yield {True: on, False: off}


def test_a_failed_pass_gets_the_apps_error_and_frees_the_model(
        servers: dict[bool, ThreadedServer], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(outputs: object) -> None:
        raise RuntimeError("the model broke")

    for server in servers.values():
        monkeypatch.setattr(server.app.state.textclf.serving.predictor, "finish", broken)
    raw = request(json.dumps({"inputs": "the team won"}), extra="")
    (fast,), (slow,) = (exchange(servers[on].port, raw) for on in (True, False))
    assert fast[0] == slow[0] == 500
    assert json.loads(fast[2]) == json.loads(slow[2])
    assert servers[True].app.state.textclf.serving.users == 0  # a reload would not wait for it


def test_a_served_request_frees_the_model(servers: dict[bool, ThreadedServer]) -> None:
    raw = request(json.dumps({"inputs": ["the team won", "a cheap phone"]}), extra="")
    (reply,) = exchange(servers[True].port, raw)
    assert reply[0] == 200 and len(json.loads(reply[2])) == 2
    assert servers[True].app.state.textclf.serving.users == 0


def test_no_model_is_left_to_the_app(servers: dict[bool, ThreadedServer],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers[True].app.state.textclf, "serving", None)  # as before loading
    (reply,) = exchange(servers[True].port, request(BODY, extra=""))
    assert reply[0] == 503 and json.loads(reply[2])["error_type"] == "unhealthy"

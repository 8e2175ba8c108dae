"""Hostile inputs to a live `python -m service` over HTTP with a timeout, so a hang fails: each
gets a 4xx with the JSON error shape (or 200 where the input is merely odd), never a 5xx; below
the app, malformed HTTP gets 400 or a closed connection; the service stays up throughout.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import build_artifact, read_until_closed

from bench.live import LiveService

MAX_BODY = 65_536
JSON = {"Content-Type": "application/json"}


def _j(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()  # raw UTF-8, as clients send it


def _nested(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b'"a"' + b"]" * depth + b"}"


# (name, method, path, body, headers, statuses accepted). All 4xx unless the input is merely
# odd but valid (then 200): the point is no 5xx, no hang, and the JSON error shape.
HOSTILE: list[tuple[str, str, str, bytes, dict[str, str], set[int]]] = [
    ("malformed JSON", "POST", "/predict", b'{"inputs": "a"', JSON, {422}),
    ("trailing garbage", "POST", "/predict", b'{"inputs": "a"} xyz', JSON, {422}),
    ("JSON NaN", "POST", "/predict", b'{"inputs": "a", "top_k": NaN}', JSON, {422}),
    ("number overflow", "POST", "/predict", b'{"inputs": "a", "top_k": 1e999}', JSON, {422}),
    ("deeply nested arrays", "POST", "/predict", _nested(20_000), JSON, {422}),
    ("deeply nested objects", "POST", "/embed", b'{"a":' * 5000 + b"1" + b"}" * 5000, JSON, {422}),
    ("nested under the limit", "POST", "/predict", _nested(1000), JSON, {422}),
    ("empty body", "POST", "/predict", b"", JSON, {422}),
    ("whitespace body", "POST", "/predict", b" \n\t ", JSON, {422}),
    ("body is null", "POST", "/predict", b"null", JSON, {422}),
    ("body is a list", "POST", "/predict", b'["a"]', JSON, {422}),
    ("body is a string", "POST", "/predict", b'"a"', JSON, {422}),
    ("content-type html", "POST", "/predict", _j({"inputs": "a"}), {"Content-Type": "text/html"}, {415}),
    ("content-type xml", "POST", "/predict", b"<a/>", {"Content-Type": "application/xml"}, {415}),
    ("content-type form", "POST", "/predict", b"inputs=a",
     {"Content-Type": "application/x-www-form-urlencoded"}, {415}),
    ("content-type multipart", "POST", "/tokenize", b"--x\r\n\r\na\r\n--x--",
     {"Content-Type": "multipart/form-data; boundary=x"}, {415}),
    ("content-type garbage", "POST", "/embed", _j({"inputs": "a"}), {"Content-Type": "x/y;;;==;q"}, {415}),
    ("text/plain to /embed", "POST", "/embed", b"a text", {"Content-Type": "text/plain"}, {415}),
    ("huge body, declared", "POST", "/predict", _j({"inputs": "a " * 40_000}), JSON, {413}),
    ("huge body, /tokenize", "POST", "/tokenize", _j({"inputs": "a " * 40_000}), JSON, {413}),
    ("huge text/plain", "POST", "/predict", b"word " * 20_000, {"Content-Type": "text/plain"}, {413}),
    ("10,000 inputs", "POST", "/predict", _j({"inputs": ["a"] * 10_000}), JSON, {413}),
    ("10,000 inputs /embed", "POST", "/embed", _j({"inputs": ["a"] * 10_000}), JSON, {413}),
    ("10,000 inputs /tokenize", "POST", "/tokenize", _j({"inputs": ["a"] * 10_000}), JSON, {413}),
    ("very long single word", "POST", "/predict", _j({"inputs": "a" * 19_000}), JSON, {200}),
    ("word over the char limit", "POST", "/predict", _j({"inputs": "a" * 20_001}), JSON, {413}),
    ("char limit on /tokenize", "POST", "/tokenize", _j({"inputs": "a" * 20_001}), JSON, {413}),
    ("10,000 tokens, truncated", "POST", "/predict", _j({"inputs": "a " * 9_999}), JSON, {200}),
    ("10,000 tokens, truncate false", "POST", "/predict",
     _j({"inputs": "a " * 9_999, "truncate": False}), JSON, {422}),
    ("control characters", "POST", "/predict", _j({"inputs": "".join(map(chr, range(1, 32))) + "a"}),
     JSON, {200}),
    ("only control whitespace", "POST", "/predict", _j({"inputs": "\t\n\r\x0b\x0c\x1c\x1d"}), JSON, {400}),
    ("escaped NUL", "POST", "/predict", b'{"inputs": "a\\u0000b"}', JSON, {200}),
    ("raw NUL in string", "POST", "/predict", b'{"inputs": "a\x00b"}', JSON, {422}),
    ("raw NUL text/plain", "POST", "/predict", b"a\x00b", {"Content-Type": "text/plain"}, {200}),
    ("invalid UTF-8 JSON", "POST", "/predict", b'{"inputs": "\xff\xfe\xfd"}', JSON, {422}),
    ("invalid UTF-8 text/plain", "POST", "/predict", b"\xc3\x28 caf\xe9", {"Content-Type": "text/plain"},
     {422}),
    ("overlong UTF-8", "POST", "/predict", b'{"inputs": "\xc0\xaf"}', JSON, {422}),
    ("lone surrogate, escaped", "POST", "/predict", b'{"inputs": "a\\ud800b"}', JSON, {422}),
    ("lone low surrogate", "POST", "/tokenize", b'{"inputs": "\\udc00"}', JSON, {422}),
    ("lone surrogate, raw bytes", "POST", "/predict", b'{"inputs": "\xed\xa0\x80"}', JSON, {422}),
    ("BOM", "POST", "/predict", b'\xef\xbb\xbf{"inputs": "a"}', JSON, {200, 422}),
    ("latin-1 claimed", "POST", "/predict", '{"inputs": "café"}'.encode("latin-1"),
     {"Content-Type": "application/json; charset=latin-1"}, {422}),
    ("combining marks", "POST", "/predict", _j({"inputs": "e" + "\u0301" * 19_000}), JSON, {200}),
    ("combining marks /tokenize", "POST", "/tokenize", _j({"inputs": "e" + "\u0301" * 19_000}), JSON,
     {200}),
    ("NFKC expansion /tokenize", "POST", "/tokenize", _j({"inputs": "\ufdfa" * 19_000}), JSON, {200}),
    ("NFKC expansion", "POST", "/predict", _j({"inputs": ["\ufdfa" * 5_000] * 4}), JSON, {200}),
    ("emoji and RTL", "POST", "/predict", _j({"inputs": "\U0001F468\u200d" * 3000 + "\u202e abc"}),
     JSON, {200}),
    ("inputs wrong type", "POST", "/predict", _j({"inputs": 5}), JSON, {422}),
    ("inputs list of numbers", "POST", "/predict", _j({"inputs": [1, 2]}), JSON, {422}),
    ("inputs object", "POST", "/predict", _j({"inputs": {"a": 1}}), JSON, {422}),
    ("inputs null", "POST", "/predict", _j({"inputs": None}), JSON, {422}),
    ("inputs list with null", "POST", "/predict", _j({"inputs": ["a", None]}), JSON, {422}),
    ("inputs missing", "POST", "/predict", _j({"raw_scores": True}), JSON, {422}),
    ("inputs empty list", "POST", "/predict", _j({"inputs": []}), JSON, {400}),
    ("inputs empty string", "POST", "/predict", _j({"inputs": ""}), JSON, {400}),
    ("raw_scores as string", "POST", "/predict", _j({"inputs": "a", "raw_scores": "yes"}), JSON, {422}),
    ("truncate as int", "POST", "/predict", _j({"inputs": "a", "truncate": 1}), JSON, {422}),
    ("unknown field", "POST", "/predict", _j({"inputs": "a", "evil": True}), JSON, {422}),
    ("bad truncation_direction", "POST", "/predict",
     _j({"inputs": "a", "truncation_direction": "up" * 1000}), JSON, {422}),
    ("top_k zero", "POST", "/predict", _j({"inputs": "a", "top_k": 0}), JSON, {422}),
    ("top_k negative", "POST", "/predict", _j({"inputs": "a", "top_k": -1}), JSON, {422}),
    ("top_k absurd", "POST", "/predict", _j({"inputs": "a", "top_k": 10**30}), JSON, {422}),
    ("top_k float", "POST", "/predict", _j({"inputs": "a", "top_k": 1.5}), JSON, {422}),
    ("top_k string", "POST", "/predict", _j({"inputs": "a", "top_k": "3"}), JSON, {422}),
    ("top_k integral float", "POST", "/predict", _j({"inputs": "a", "top_k": 2.0}), JSON, {422}),
    ("neighbors string", "POST", "/embed", _j({"words": ["a"], "neighbors": "2"}), JSON, {422}),
    ("top_k null", "POST", "/predict", _j({"inputs": "a", "top_k": None}), JSON, {200}),
    ("top_k max", "POST", "/predict", _j({"inputs": "a", "top_k": 10_000}), JSON, {200}),
    ("words too many", "POST", "/embed", _j({"words": ["a"] * 1001}), JSON, {422}),
    ("words empty", "POST", "/embed", _j({"words": []}), JSON, {422}),
    ("neighbors absurd", "POST", "/embed", _j({"words": ["a"], "neighbors": 10**9}), JSON, {422}),
    ("words and inputs", "POST", "/embed", _j({"words": ["a"], "inputs": "a"}), JSON, {422}),
    ("GET /embed no word", "GET", "/embed", b"", {}, {422}),
    ("GET /embed neighbors", "GET", "/embed?word=a&neighbors=-5", b"", {}, {422}),
    ("GET /embed 1001 words", "GET", "/embed?" + "&".join(["word=a"] * 1001), b"", {}, {422}),
    ("GET /predict", "GET", "/predict", b"", {}, {405}),
    ("PUT /predict", "PUT", "/predict", _j({"inputs": "a"}), JSON, {405}),
    ("DELETE /info", "DELETE", "/info", b"", {}, {405}),
    ("unknown path", "GET", "/nope", b"", {}, {404}),
    ("path traversal", "GET", "/../../etc/passwd", b"", {}, {404}),
    ("encoded traversal", "GET", "/%2e%2e/%2e%2e/etc/passwd", b"", {}, {404}),
    ("reload without key configured", "POST", "/admin/reload", b"", {}, {404}),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    model = build_artifact(tmp_path_factory.mktemp("hostile") / "model")
    with LiveService(model, max_body_bytes=MAX_BODY) as service:
        yield service


@pytest.mark.integration
@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "statuses"), HOSTILE,
                         ids=[case[0] for case in HOSTILE])
def test_hostile_input(live: object, name: str, method: str, path: str, body: bytes,
                       headers: dict[str, str], statuses: set[int]) -> None:
    start = time.monotonic()
    status, reply_headers, reply = live.request(method, path, body or None,  # type: ignore[attr-defined]
                                                headers, timeout=15)
    took = time.monotonic() - start
    assert status in statuses, (status, reply[:300])
    assert took < 5, f"{name}: {took:.1f} s"
    if status >= 400:
        assert reply_headers["content-type"] == "application/json"
        error = json.loads(reply)
        assert set(error) == {"error", "error_type"}, error
        assert isinstance(error["error"], str) and error["error"]


@pytest.mark.integration
def test_chunked_body_over_the_limit(live: object) -> None:
    """No Content-Length: the limit holds while the body is read, 413 before it all arrives."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=15)  # type: ignore[attr-defined]
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 8192
    try:
        for _ in range(MAX_BODY // len(chunk) + 4):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 413
    assert json.loads(response.read())["error_type"] == "payload_too_large"
    sock.close()


@pytest.mark.integration
@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: \x01\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x00" * 1000,
], ids=["garbage", "control char in header", "length and chunked", "negative length",
        "bad version", "NULs"])
def test_malformed_http_is_refused(live: object, raw: bytes) -> None:
    """Below the app: the protocol (service.server) answers 400 in the JSON error shape, or
    closes, and the service stays up."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=15)  # type: ignore[attr-defined]
    sock.sendall(raw)
    reply = read_until_closed(sock)
    sock.close()
    if reply:
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 Bad Request"), reply[:200]
        assert b"content-type: application/json" in head
        assert json.loads(body)["error_type"] == "bad_request"
    assert live.request("GET", "/health/ready")[0] == 200  # type: ignore[attr-defined]


@pytest.mark.integration
def test_service_is_fine_after_the_hostile_inputs(live: object) -> None:
    status, _, body = live.request("POST", "/predict", _j({"inputs": "the team won"}), JSON)  # type: ignore[attr-defined]
    assert status == 200 and len(json.loads(body)) == 3
    assert live.request("GET", "/health/ready")[0] == 200  # type: ignore[attr-defined]
    log = live.log()  # type: ignore[attr-defined]
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]

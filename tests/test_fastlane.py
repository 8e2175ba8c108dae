"""service/fastlane.py: POST /predict answered by the protocol gives what the app gives.

Two live servers on the same tiny model, the lane on and off (TEXTCLF_FAST_PREDICT); the same
raw requests go to both and the answers must match: status, body, headers (but the date and the
per-request ids and timings). A counting wrapper around `answer` shows which requests the lane
took; the rest must still be answered by the app, in order.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import build_artifact, sample
from prometheus_client import CollectorRegistry
from raw_http import exchange, request
from threaded_server import ThreadedServer

import service.protocol
from service.config import Settings

pytestmark = pytest.mark.integration
VARYING = {"date", "x-request-id", "x-queue-time", "x-inference-time"}
TEXT = "the team won the final"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, ThreadedServer]]:
    model = build_artifact(tmp_path_factory.mktemp("lane") / "model")
    on = ThreadedServer(Settings(model_dir=model, device="cpu", api_key="k3y"), CollectorRegistry())
    off = ThreadedServer(Settings(model_dir=model, device="cpu", api_key="k3y", fast_predict=False),
                         CollectorRegistry())
    with on, off:
        yield {True: on, False: off}


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which part of the lane took each request of the test: "direct" (service.direct, a whole
    plain request it can answer) or "task" (service.fastlane's `answer`, the rest)."""
    calls: list[str] = []
    real_answer, real_queue = service.protocol.answer, service.protocol.queue

    async def counting(lane, writer, request):  # noqa: ANN001, ANN202
        assert request.scope["path"] == "/predict"
        calls.append("task")
        await real_answer(lane, writer, request)

    def queued(*args):  # noqa: ANN002, ANN202
        calls.append("direct")
        real_queue(*args)

    monkeypatch.setattr(service.protocol, "answer", counting)
    monkeypatch.setattr(service.protocol, "queue", queued)
    return calls


def stable(reply: tuple) -> tuple:
    status, headers, body, closed = reply
    return status, {k: v for k, v in headers.items() if k not in VARYING}, json.loads(body), closed


CASES = {
    "one text": request(json.dumps({"inputs": TEXT})),
    "a list, top_k, raw scores": request(json.dumps({"inputs": [TEXT, "a b"], "top_k": 2,
                                                     "raw_scores": True})),
    "plain text": request(TEXT, "text/plain"),
    "json with charset": request(json.dumps({"inputs": TEXT}), "application/json; charset=utf-8"),
    "truncated": request(json.dumps({"inputs": "word " * 40, "truncate": True})),
    "too many tokens": request(json.dumps({"inputs": "word " * 40})),
    "too many tokens, not truncated": request(json.dumps({"inputs": "word " * 40, "truncate": False})),
    "empty text": request(json.dumps({"inputs": " "})),
    "wrong type": request(json.dumps({"inputs": 5})),
    "unknown field": request(json.dumps({"inputs": TEXT, "colour": "red"})),
    "broken json": request(b'{"inputs": "unterminated'),
    "not utf-8": request(b'{"inputs": "\xff\xfe"}'),
    "wrong media type": request(json.dumps({"inputs": TEXT}), "application/xml"),
    "client closes": request(json.dumps({"inputs": TEXT}), extra="X-API-Key: k3y\r\nConnection: close\r\n"),
    "client id": request(json.dumps({"inputs": TEXT}), extra="X-API-Key: k3y\r\nX-Request-Id: abc-1\r\n"),
    "a header service.direct leaves": request(json.dumps({"inputs": TEXT}),
                                              extra="X-API-Key: k3y\r\nX-Note: caf\xe9\r\n"),
}
# what service.direct answers itself; the lane's task answers the rest (errors: the app's handlers)
DIRECT = {"one text", "a list, top_k, raw scores", "plain text", "json with charset", "truncated",
          "too many tokens", "client closes", "client id"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_lane_answers_as_the_app_does(servers: dict[bool, ThreadedServer], case: str,
                                          lane_calls: list[str]) -> None:
    fast = exchange(servers[True].port, CASES[case])[0]
    assert lane_calls == ["direct" if case in DIRECT else "task"]  # the lane answered it
    slow = exchange(servers[False].port, CASES[case])[0]
    assert len(lane_calls) == 1  # and the other server has no lane
    assert stable(fast) == stable(slow)
    if case == "client id":
        assert fast[1]["x-request-id"] == slow[1]["x-request-id"] == "abc-1"
    assert fast[3] == (case == "client closes")  # keep-alive unless the client asked to close


@pytest.mark.parametrize("name, raw", [
    ("wrong key", request(json.dumps({"inputs": TEXT}), extra="X-API-Key: nope\r\n")),
    ("no key", request(json.dumps({"inputs": TEXT}), extra="")),
    ("query string", request(json.dumps({"inputs": TEXT}), path="/predict?x=1")),
    ("declared too large", b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: k3y\r\n"
                           b"Content-Length: 9999999\r\n\r\n{}"),
    ("chunked", b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: k3y\r\nContent-Type: "
                b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"13\r\n{\"inputs\": \"a b c\"}\r\n0\r\n\r\n"),
])
def test_requests_the_lane_leaves_get_the_apps_answer(servers: dict[bool, ThreadedServer],
                                                      name: str, raw: bytes,
                                                      lane_calls: list[str]) -> None:
    fast = exchange(servers[True].port, raw)[0]
    slow = exchange(servers[False].port, raw)[0]
    assert lane_calls == []
    assert stable(fast) == stable(slow)
    assert fast[0] != 200 or name in ("query string", "chunked")


def test_a_body_after_the_head_is_handed_to_the_app(servers: dict[bool, ThreadedServer],
                                                    lane_calls: list[str]) -> None:
    raw = request(json.dumps({"inputs": TEXT}))
    head, body = raw[: -20], raw[-20:]
    split = exchange(servers[True].port, head, body, pause_s=0.2)[0]
    whole = exchange(servers[True].port, raw)[0]
    assert lane_calls == ["direct"]  # only the request that came in one read
    assert stable(split) == stable(whole)


def test_pipelined_requests_are_answered_in_order(servers: dict[bool, ThreadedServer],
                                                  lane_calls: list[str]) -> None:
    texts = [TEXT, " ", "a cheap phone", "the film was long"]
    raws = [request(json.dumps({"inputs": t})) for t in texts]
    replies = exchange(servers[True].port, b"".join(raws), count=len(raws))
    one_by_one = [exchange(servers[False].port, raw)[0] for raw in raws]
    assert [stable(r)[:3] for r in replies] == [stable(r)[:3] for r in one_by_one]
    assert [r[0] for r in replies] == [200, 400, 200, 200]
    assert lane_calls[0] == "task"  # the first at least; those behind it wait in uvicorn's pipeline


def test_a_full_queue_refuses_as_the_app_does(servers: dict[bool, ThreadedServer],
                                              monkeypatch: pytest.MonkeyPatch,
                                              lane_calls: list[str]) -> None:
    for server in servers.values():
        monkeypatch.setattr(server.app.state.textclf.serving.batcher, "max_queue_size", 0)
    fast, slow = (exchange(servers[on].port, CASES["one text"])[0] for on in (True, False))
    assert lane_calls == ["task"]  # service.direct leaves it: no room
    assert stable(fast) == stable(slow)
    assert fast[0] == 429 and fast[1]["retry-after"] == "1"


def test_lane_requests_are_counted_and_a_gone_client_breaks_nothing(
        servers: dict[bool, ThreadedServer], lane_calls: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    server = servers[True]
    registry = server.app.state.textclf.metrics.registry

    def served() -> float:
        return sample(registry, "textclf_requests_total", endpoint="/predict", status="200")

    before = served()
    for _ in range(3):
        assert exchange(server.port, CASES["one text"])[0][0] == 200
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(CASES["one text"])  # and gone before the answer
    deadline = time.monotonic() + 5
    while served() < before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served() == before + 4  # as RequestMiddleware, a reply to a gone client counts
    assert len(lane_calls) == 4
    assert exchange(server.port, CASES["one text"])[0][0] == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_the_lane_can_be_turned_off(tmp_path: Path, lane_calls: list[str]) -> None:
    settings = Settings(model_dir=build_artifact(tmp_path / "model"), device="cpu",
                        fast_predict=False)
    with ThreadedServer(settings, CollectorRegistry()) as server:
        assert exchange(server.port, request(json.dumps({"inputs": TEXT}), extra=""))[0][0] == 200
    assert lane_calls == []

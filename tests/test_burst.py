"""service/burst.py: the lane's responses held to the end of a loop iteration and written
together, in order, to the right connections; and service.protocol flushing them before any
close, so none is lost or overtaken."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import build_artifact
from prometheus_client import CollectorRegistry
from raw_http import read_response, request
from threaded_server import ThreadedServer

from service.burst import WriteBurst, burst_for
from service.config import Settings
from service.protocol import ServiceHttpProtocol


class Wire:
    """A transport that records what is written to it and when it was closed."""

    def __init__(self, log: list[tuple[str, bytes]], name: str, fails: bool = False) -> None:
        self.log, self.name, self.fails, self.closed = log, name, fails, False

    def write(self, data: bytes) -> None:
        if self.fails:
            raise OSError("broken")
        self.log.append((self.name, data))

    def close(self) -> None:
        self.closed = True
        self.log.append((self.name, b"<close>"))

    def is_closing(self) -> bool:
        return self.closed


def test_writes_wait_for_the_end_of_the_iteration_and_go_out_in_order() -> None:
    async def scenario() -> tuple[list, list]:
        log: list[tuple[str, bytes]] = []
        burst = WriteBurst(asyncio.get_running_loop())
        a, b = Wire(log, "a"), Wire(log, "b")
        burst.write(a, b"1")
        burst.write(b, b"2")
        burst.write(a, b"3")
        held = list(log)  # nothing written yet
        await asyncio.sleep(0)  # one iteration
        return held, log

    held, log = asyncio.run(scenario())
    assert held == []
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]


def test_a_direct_flush_writes_at_once_and_the_scheduled_one_finds_nothing() -> None:
    async def scenario() -> list:
        log: list[tuple[str, bytes]] = []
        burst = WriteBurst(asyncio.get_running_loop())
        wire = Wire(log, "a")
        burst.write(wire, b"1")
        burst.flush()
        assert log == [("a", b"1")]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == [("a", b"1")]  # written once


def test_a_closed_or_broken_connection_does_not_hold_back_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list:
        log: list[tuple[str, bytes]] = []
        burst = WriteBurst(asyncio.get_running_loop())
        gone, broken, fine = Wire(log, "gone"), Wire(log, "broken", fails=True), Wire(log, "fine")
        for wire in (gone, broken, fine):
            burst.write(wire, b"x")
        gone.close()
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == [("gone", b"<close>"), ("fine", b"x")]
    assert "could not be written" in caplog.text


def test_each_loop_has_one_burst() -> None:
    async def both() -> tuple[WriteBurst, WriteBurst]:
        loop = asyncio.get_running_loop()
        return burst_for(loop), burst_for(loop)

    first, again = asyncio.run(both())
    other, _ = asyncio.run(both())
    assert first is again and other is not first


def _protocol(wire: Wire, burst: WriteBurst) -> Any:
    """The parts of a ServiceHttpProtocol that its closing paths use, around a Wire."""
    protocol: Any = ServiceHttpProtocol.__new__(ServiceHttpProtocol)
    protocol.transport, protocol._burst, protocol._closing, protocol.cycle = wire, burst, None, None
    return protocol


@pytest.mark.parametrize("close", ["shutdown", "abort", "error reply"])
def test_a_held_response_goes_out_before_the_connection_closes(close: str) -> None:
    """uvicorn's shutdown closes a connection whose response is complete; the lane marks it
    complete when it hands the bytes to the burst, so the close must flush them first."""
    async def scenario() -> list:
        log: list[tuple[str, bytes]] = []
        burst = WriteBurst(asyncio.get_running_loop())
        wire = Wire(log, "a")
        protocol = _protocol(wire, burst)
        burst.write(wire, b"response")
        if close == "shutdown":
            protocol.shutdown()
        elif close == "abort":
            protocol.abort()
        else:
            protocol.send_400_response("bad")
        await asyncio.sleep(0)
        return log

    log = asyncio.run(scenario())
    assert log[0] == ("a", b"response")
    assert log[-1] == ("a", b"<close>")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    model = build_artifact(tmp_path_factory.mktemp("burst") / "model")
    with ThreadedServer(Settings(model_dir=model, device="cpu"), CollectorRegistry()) as live:
        yield live


@pytest.mark.integration
def test_many_connections_at_once_each_get_their_own_answer(server: ThreadedServer) -> None:
    """Requests answered by one forward pass go out in one burst: each to its own client."""
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(24)]
    try:
        for i, sock in enumerate(socks):  # 1 to 3 texts each: the answers' lengths differ
            texts = ["the team won"] * (i % 3 + 1)
            sock.sendall(request(json.dumps({"inputs": texts}), extra=f"X-Request-Id: c{i}\r\n"))
        for i, sock in enumerate(socks):
            status, headers, body = read_response(sock.makefile("rb"))
            assert status == 200 and headers["x-request-id"] == f"c{i}"
            assert len(json.loads(body)) == i % 3 + 1
    finally:
        for sock in socks:
            sock.close()

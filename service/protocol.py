"""The service's HTTP protocol: service.httpbase's, with POST /predict answered without ASGI.

A complete, plain POST /predict goes to service.direct in one call; one whose body is still on
its way, or that service.direct leaves, goes to service.fastlane once httptools has parsed it;
everything else goes to uvicorn and the app. The lane's responses go out in one burst per loop
iteration (service.burst).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from service.balance import ConnectionBalance
from service.burst import burst_for
from service.direct import Ready, parse_head, prepare, queue, read_inputs
from service.fastlane import PATH, FastRequest, answer, find_lane, response_head
from service.httpbase import LimitedHttpToolsProtocol
from service.state import Serving, service_state


class ServiceHttpProtocol(LimitedHttpToolsProtocol):
    """LimitedHttpToolsProtocol that answers a POST /predict whose head and body come in one
    read itself: service.direct takes a plain one whole, before httptools sees it, and
    service.fastlane the others it can (see there for which requests qualify). Its request
    stands in for uvicorn's cycle meanwhile (`self.cycle`), so pipelining, shutdown and
    disconnects work as before. The lane's responses go out in one burst per loop iteration
    (service.burst)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._lane = find_lane(self.app)
        self._burst = burst_for(self.loop)
        self._fast: FastRequest | None = None  # the lane's request whose body is being read
        state = service_state(self.app)
        self._balance: ConnectionBalance | None = state.balance if state is not None else None
        if self._balance is not None:
            self._balance.attach(self.connections)  # the same set for every connection
        self._closing: FastRequest | RequestResponseCycle | None = None  # told to close for it

    def on_headers_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        self._keep_open_for_pipelined()
        rebalance = self._rebalance(keep_alive)
        if self._lane is not None and self._qualifies():
            request = self._lane.admit(self.scope, self.headers, keep_alive and not rebalance)
            if request is not None:
                self.cycle = self._fast = request  # type: ignore[assignment]
                self._closing = request if rebalance else None
                self._end_head()
                return
        super().on_headers_complete()
        if rebalance and isinstance(self.cycle, RequestResponseCycle):
            self.cycle.keep_alive = False  # uvicorn then sends `connection: close` and closes
            self._closing = self.cycle

    def _rebalance(self, keep_alive: bool) -> bool:
        """Whether service.balance has this kept-alive request's connection closed after it."""
        return keep_alive and self._balance is not None and self._balance.should_close()

    def _keep_open_for_pipelined(self) -> None:
        """A request pipelined behind one that service.balance told to close would be lost with
        the connection: the earlier one keeps it open again if its response has not started
        (pipelined requests usually come in one read, before any response)."""
        closing, self._closing = self._closing, None
        if (closing is not None and not closing.response_complete
                and not getattr(closing, "response_started", False)):
            closing.keep_alive = True

    def _qualifies(self) -> bool:
        """The head-level conditions of service.fastlane; `Lane.admit` checks the headers."""
        parser = self.parser
        return (self.url == PATH and parser.get_method() == b"POST"
                and parser.get_http_version() == "1.1" and not self.expect_100_continue
                and not parser.should_upgrade() and self._free())

    def _free(self) -> bool:
        """No response open on this connection, its writes flow, and the server is within its
        concurrency limit: the lane may take a request."""
        limit = self.limit_concurrency
        return ((self.cycle is None or self.cycle.response_complete) and not self.flow.write_paused
                and (limit is None or (len(self.connections) < limit and len(self.tasks) < limit)))

    def on_body(self, body: bytes) -> None:
        if self._fast is not None:
            self._fast.parts.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        request, self._fast = self._fast, None
        if request is None:
            super().on_message_complete()
            return
        self._in_head = True
        assert self._lane is not None
        self.spawn(answer(self._lane, self, request))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task that graceful shutdown waits for, as for the app's tasks."""
        task = self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def data_received(self, data: bytes) -> None:
        whole = self._whole_request(data)
        if whole is not None:
            self._queue_direct(*whole)
            return
        super().data_received(data)
        if self._fast is not None and not self.transport.is_closing():
            self._hand_over(self._fast)

    def _whole_request(self, data: bytes) -> tuple[FastRequest, Serving, Ready] | None:
        """`data` read by service.direct, if it is one complete, plain POST /predict that the
        module can answer and nothing is half-read on this connection; else None, and nothing
        has changed."""
        lane = self._lane
        if (lane is None or not self._in_head or self._head_bytes or not self._free()
                or self.pipeline or self.transport.is_closing()):
            return None
        head = parse_head(data)
        if head is None:
            return None
        request = lane.admit(self._scope_of(head.headers), head.headers, head.keep_alive)
        serving = lane.state.serving
        inputs = None if request is None else read_inputs(request.media, head.body)
        if request is None or serving is None or inputs is None:
            return None
        ready = prepare(serving, inputs, lane)
        return None if ready is None else (request, serving, ready)

    def _queue_direct(self, request: FastRequest, serving: Serving, ready: Ready) -> None:
        """What uvicorn and the lane do for a request, from its first byte to its queueing. No
        task is made: uvicorn's limit_concurrency counts the connection, which holds one such
        request at most."""
        assert self._lane is not None
        self._unset_keepalive_if_required()  # as uvicorn does on data
        self._end_head()  # no head timer: the request came whole
        self._in_head = True  # what comes next is the next request's head
        self._keep_open_for_pipelined()
        if self._rebalance(request.keep_alive):
            request.keep_alive = False
            self._closing = request
        self.cycle = request  # type: ignore[assignment]
        queue(self._lane, self, request, serving, ready, self.spawn)

    def _scope_of(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        """The ASGI scope uvicorn's on_message_begin would start (the app's error handlers and
        request ids read it); `Lane.admit` adds the method and path."""
        return {"type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1", "server": self.server, "client": self.client,
                "scheme": self.scheme, "root_path": self.root_path, "headers": headers,
                "state": self.app_state.copy()}

    def _hand_over(self, request: FastRequest) -> None:
        """The body did not come with the head: uvicorn and the app take the request (and apply
        the body limit and timeout), given what has arrived so far."""
        # no earlier response was open (`_qualifies`): uvicorn starts the app at once
        self._fast = self.cycle = None  # type: ignore[assignment]
        super().on_headers_complete()  # self.scope, url and headers are still this request's
        for part in request.parts:
            super().on_body(part)

    def write_response(self, request: FastRequest, status: int,
                       headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        request.response_complete = True
        if request.disconnected or self.transport.is_closing():
            return
        head = response_head(status, self.server_state.default_headers, headers, request)
        if request.keep_alive:
            self._burst.write(self.transport, head + body)
        else:
            self._write_and_close(head + body)
        self.on_response_complete()

    def abort(self) -> None:
        self._burst.flush()
        self.transport.close()

    def _write_and_close(self, data: bytes) -> None:
        self._burst.flush()  # what is held for this connection goes first
        super()._write_and_close(data)

    def shutdown(self) -> None:
        self._closing = None  # uvicorn's shutdown closes the connection: nothing to keep open
        self._burst.flush()  # a response held for it must go out before the close
        super().shutdown()

    def on_response_complete(self) -> None:
        closing = self._closing  # counted once its response is out, as sent: not if undone
        if closing is not None and closing.response_complete and not closing.keep_alive:
            self._closing = None
            if self._balance is not None:
                self._balance.closed()
        super().on_response_complete()

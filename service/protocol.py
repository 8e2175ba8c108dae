"""uvicorn's httptools protocol, with what a public server needs that uvicorn leaves out.

- The request head is bounded in size and time (431, slowloris; see LimitedHttpToolsProtocol).
- Unparseable HTTP gets the service's JSON error shape (uvicorn's is plain text), and so does
  uvicorn's refusal beyond limit_concurrency: the app answers it (see `OVER_LIMIT`).
- A plain POST /predict is answered without ASGI (`ServiceHttpProtocol`, service.fastlane).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.balance import ConnectionBalance
from service.burst import burst_for
from service.errors import OVER_LIMIT, ErrorType, raw_error
from service.fastlane import PATH, FastRequest, answer, find_lane, response_head
from service.state import service_state

MAX_HEAD_BYTES = 64 * 1024  # request line + headers
HEAD_TIMEOUT_S = 10.0  # from a connection's (or a request's) first byte to the end of its headers


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head, in size and in time.

    httptools itself buffers a request line and headers of any size (h11_max_incomplete_event_size
    only applies to h11, which is ~40% slower here): 20 connections sending 5 MB of headers each
    cost 100 MB of memory. Here a head over MAX_HEAD_BYTES gets 431 and the connection is closed,
    and a connection that has not finished its headers HEAD_TIMEOUT_S after it started (slowloris:
    connect, then send nothing or a byte now and then) is closed. Bodies are not limited here
    (TEXTCLF_MAX_BODY_BYTES is checked while reading them)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head, self._head_bytes = True, 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def _end_head(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._head_timer is not None:
            self._head_timer.cancel()

    def on_message_complete(self) -> None:
        self._in_head = True  # what comes next is the next request's head
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and self._in_head and not self.transport.is_closing():
            room = MAX_HEAD_BYTES - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            part, data = data[:room], data[room:]  # feed what fits: it may end the head
            self._head_bytes += len(part)
            super().data_received(part)
            if self._in_head:
                self._reject_head()
                return
        if data and not self.transport.is_closing():
            super().data_received(data)

    def _reject_head(self) -> None:
        self._write_and_close(raw_error(ErrorType.headers_too_large,
                                        f"request line and headers are over {MAX_HEAD_BYTES} bytes"))

    def _write_and_close(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is service_unavailable:  # uvicorn's plain-text 503 beyond limit_concurrency
            # the app answers instead (service.middleware: 429 `overloaded`, counted in the
            # metrics, with a request id), told so by an ASGI scope extension
            cycle.scope.setdefault("extensions", {})[OVER_LIMIT] = {}
            app = self.app
        super()._start_asgi_task(cycle, app)

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse the request: our JSON error shape, not uvicorn's text."""
        self._write_and_close(raw_error(ErrorType.bad_request, msg))


class ServiceHttpProtocol(LimitedHttpToolsProtocol):
    """LimitedHttpToolsProtocol that hands a POST /predict whose head and body come in one read
    to service.fastlane (see there for which requests qualify); it stands in for uvicorn's
    cycle meanwhile (`self.cycle`), so pipelining, shutdown and disconnects work as before.
    The lane's responses go out in one burst per loop iteration (service.burst)."""

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
        rebalance = keep_alive and self._balance is not None and self._balance.should_close()
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
        parser, limit = self.parser, self.limit_concurrency
        return (self.url == PATH and parser.get_method() == b"POST"
                and parser.get_http_version() == "1.1" and not self.expect_100_continue
                and (self.cycle is None or self.cycle.response_complete)
                and not self.flow.write_paused and not parser.should_upgrade()
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
        task = self.loop.create_task(answer(self._lane, self, request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)  # graceful shutdown waits for it, as for the app's tasks

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._fast is not None and not self.transport.is_closing():
            self._hand_over(self._fast)

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

"""uvicorn's httptools protocol, with what a public server needs that uvicorn leaves out.

- The request head is bounded in size and time (431, slowloris; see LimitedHttpToolsProtocol).
- Unparseable HTTP gets the service's JSON error shape (uvicorn's is plain text), and so does
  uvicorn's refusal beyond limit_concurrency: the app answers it (see `OVER_LIMIT`).

service.protocol builds the service's protocol (the fast lane for POST /predict) on this one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import OVER_LIMIT, ErrorType, raw_error

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

"""POST /predict answered in the HTTP protocol itself, without ASGI: the hot path under load.

Per request uvicorn builds an ASGI scope, a RequestResponseCycle with its receive and send
coroutines and a task, and the app wraps `send` again; at 64 connections that cost more CPU
than tokenizing and batching together. Here `service.protocol` hands a POST /predict whose head
and body arrived in the same read to `answer`: one plain task runs the route's own core
(`service.routes.classify`) and writes the response bytes itself. (A whole, plain request goes
to service.direct before that, without a task; the lane then answers the rest, every error
among them, with the app's handlers. The two share `write_answer` and `answer_error`.)

Everything else goes to uvicorn and the app exactly as before: another path or method, a body
still on its way (chunked, large, slow: then the app's size limit and body timeout apply),
`Expect: 100-continue`, HTTP/1.0, a request pipelined behind one not yet answered, a missing
or wrong API key, a connection whose writes are paused, a server at its concurrency limit. So
the lane only answers what the app would answer the same way, with the same body and headers
(uvicorn's `server` and `date`, content type and length, timing, `x-request-id`), the same
error responses (the app's own exception handlers), and the same metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from service.body import media_type
from service.middleware import RequestMiddleware, authorised, error_reply, predict_headers
from service.routes import classify, predict_reply
from service.state import ServiceState, find_app, service_state

log = logging.getLogger("textclf.fastlane")
PATH = b"/predict"


class _NoEvent:
    """uvicorn's connection_lost sets the cycle's message event; the lane waits on none."""

    def set(self) -> None:
        pass


NO_EVENT = _NoEvent()


class FastRequest:
    """Stands in for uvicorn's RequestResponseCycle while the lane has a request: the protocol's
    own bookkeeping (pipelining, graceful shutdown, connection_lost) reads these fields."""

    __slots__ = ("scope", "media", "request_id", "started", "parts", "keep_alive",
                 "response_complete", "disconnected", "message_event")

    def __init__(self, scope: Any, media: str, request_id: bytes, keep_alive: bool) -> None:
        self.scope, self.media, self.request_id = scope, media, request_id
        self.started = time.perf_counter()  # as RequestMiddleware: from the end of the head
        self.parts: list[bytes] = []
        self.keep_alive = keep_alive
        self.response_complete = self.disconnected = False
        self.message_event = NO_EVENT


class Writer(Protocol):
    """What `answer` needs of the HTTP protocol (service.protocol.ServiceHttpProtocol)."""

    def write_response(self, request: FastRequest, status: int,
                       headers: list[tuple[bytes, bytes]], body: bytes) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class Lane:
    """The app objects the lane uses, found once per connection."""

    app: Any  # service.main.TextclfApp
    state: ServiceState
    front: RequestMiddleware

    def admit(self, scope: Any, headers: list[tuple[bytes, bytes]],
              keep_alive: bool) -> FastRequest | None:
        """A FastRequest if the lane may answer this POST /predict (its head only), else None."""
        content_type, length, encoded = predict_headers(headers)
        if (encoded or length is None or not length.isdigit()
                or int(length) > self.state.settings.max_body_bytes):
            return None  # chunked, no length, or the app's 413
        if self.front.api_key and not authorised(scope, self.front.api_key):
            return None  # the app's 401
        scope.update(method="POST", path="/predict", raw_path=PATH, query_string=b"",
                     app=self.app)  # what an error handler may read
        return FastRequest(scope, media_type(content_type), self.front.request_id(scope),
                           keep_alive)


def find_lane(asgi_app: Any) -> Lane | None:
    """The lane for the app uvicorn serves (through its wrappers), or None: not textclf's app,
    or TEXTCLF_FAST_PREDICT=false."""
    app = find_app(asgi_app)
    state = service_state(app)
    front = getattr(app, "front", None)
    if state is None or front is None or not state.settings.fast_predict:
        return None
    return Lane(app, state, front)


async def _given(body: bytes) -> bytes:
    return body


async def answer(lane: Lane, writer: Writer, request: FastRequest) -> None:
    """Classify, then write the response: 200 with the labels, or the app's error response."""
    body = b"".join(request.parts)
    try:
        reply, result = await classify(lane.state, request.media, lambda: _given(body))
    except Exception as exc:  # noqa: BLE001 - answered by the app's handlers, as in the app
        await answer_error(lane, writer, request, exc)
        return
    write_answer(lane, writer, request, lambda: (200, *predict_reply(reply, result)))


async def answer_error(lane: Lane, writer: Writer, request: FastRequest, exc: Exception) -> None:
    """The app's error response to `exc` (its own exception handlers, as in the app)."""
    try:
        response = await error_reply(lane.app, request.scope, exc)
    except Exception:  # noqa: BLE001 - no handler applies
        give_up(lane, writer, request)
        return
    headers = response.raw_headers
    if any(k == b"connection" and b"close" in v.lower() for k, v in headers):
        request.keep_alive = False
    write_answer(lane, writer, request, lambda: (response.status_code, bytes(response.body), headers))


Reply = Callable[[], tuple[int, bytes, list[tuple[bytes, bytes]]]]  # status, payload, headers


def write_answer(lane: Lane, writer: Writer, request: FastRequest, reply: Reply) -> None:
    """Write the response `reply` gives and count the request."""
    try:
        status, payload, headers = reply()
        writer.write_response(request, status, headers, payload)
    except Exception:  # noqa: BLE001 - see give_up
        give_up(lane, writer, request)
        return
    lane.state.metrics.count_request("/predict", status, time.perf_counter() - request.started)


def give_up(lane: Lane, writer: Writer, request: FastRequest) -> None:
    """A bug on the way (call it from an `except`: it logs the traceback): the connection is
    closed rather than the client left waiting for ever, and the request counts as a 500."""
    log.exception("POST /predict failed in the fast lane")
    writer.abort()
    lane.state.metrics.count_request("/predict", 500, time.perf_counter() - request.started)


def response_head(status: int, default_headers: list[tuple[bytes, bytes]],
                  headers: list[tuple[bytes, bytes]], request: FastRequest) -> bytes:
    """Status line and headers as uvicorn's RequestResponseCycle.send writes them."""
    lines = [STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in (*default_headers, *headers)),
             b"x-request-id: %s\r\n" % request.request_id]
    if not request.keep_alive and not any(name == b"connection" for name, _ in headers):
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)

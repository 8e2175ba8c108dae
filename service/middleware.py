"""Pure ASGI middleware: request id, API key, request metrics. (BaseHTTPMiddleware would add a
task and a copy per request.) `service.main.TextclfApp` puts it in front of FastAPI's whole
middleware stack, so it also sees the 500s that ServerErrorMiddleware sends.

It also short-cuts `POST /predict`, the hot path: routing it through Starlette's router, the
middleware layers and FastAPI's request handler cost more CPU per request than the model does
(bench/asgi.py). The middleware runs the route's core (`service.routes.classify`) on the raw
ASGI messages and maps what it raises with the app's own exception handlers, as
ExceptionMiddleware and ServerErrorMiddleware would (the handler for Exception logs it and
answers the JSON 500). Same answers, headers and metrics; every other method and path takes
the normal route. (Under `python -m service` most POST /predict never reach ASGI at all:
service.fastlane answers them in the protocol; this path serves the rest, and ASGI clients.)
"""

from __future__ import annotations

import hmac
import itertools
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.body import check_declared_length, collect, media_type, receive_chunks
from service.errors import OVER_LIMIT, ErrorType, error_response, overloaded
from service.metrics import Metrics, endpoint_label
from service.routes import classify, predict_reply

# beyond uvicorn's limit_concurrency; the same 429 as a full queue (text-embeddings-inference
# answers 429 when over its concurrency limit too), and the connection is closed as uvicorn does
OVER_LIMIT_MESSAGE = "the server is at its concurrency limit; retry later"
PUBLIC_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def authorised(scope: Scope, api_key: bytes) -> bool:
    """At least one credential (X-API-Key, or Authorization: Bearer), and none of those sent is
    wrong: a request with a right key and a wrong one is refused."""
    given = [key.encode("latin-1") for key in (_header(scope, b"x-api-key"), _bearer(scope))
             if key is not None]
    # constant-time comparison: response timing must not reveal how much of the key matched
    matches = [hmac.compare_digest(key, api_key) for key in given]
    return bool(matches) and all(matches)


def _bearer(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth is None:
        return None
    return auth[7:] if auth[:7].lower() == "bearer " else ""  # another scheme: a wrong key


def _exception_handler(app: Any, exc: Exception) -> Any:
    """The handler Starlette would pick (status code, then class, Exception last: what
    ServerErrorMiddleware would use for a 500); None if there is none."""
    handlers = app.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def error_reply(app: Any, scope: Scope, exc: Exception) -> Response:
    """The response the app's own exception handler gives `exc` (re-raised if none applies)."""
    handler = _exception_handler(app, exc)
    if handler is None:
        raise exc
    response: Response = await handler(Request(scope), exc)
    return response


async def fast_predict(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /predict straight on ASGI messages: no Request or Response objects, one pass over
    the headers. Errors take the app's own handlers, as on every other route."""
    state = scope["app"].state.textclf
    settings = state.settings
    content_type, declared, _ = predict_headers(scope["headers"])
    try:
        check_declared_length(declared, settings.max_body_bytes)
        body, result = await classify(state, media_type(content_type),
                                      lambda: collect(receive_chunks(receive), settings))
    except Exception as exc:
        response = await error_reply(scope["app"], scope, exc)
        await response(scope, receive, send)
        return
    payload, headers = predict_reply(body, result)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def predict_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None, bool]:
    """Content-Type, Content-Length (None if absent) and whether a Transfer-Encoding is set, in
    one pass over the headers."""
    content_type, declared, encoded = "", None, False
    for key, value in headers:
        if key == b"content-type":
            content_type = value.decode("latin-1")
        elif key == b"content-length":
            declared = value.decode("latin-1")
        elif key == b"transfer-encoding":
            encoded = True
    return content_type, declared, encoded


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None) -> None:
        self.app, self.metrics = app, metrics
        self.api_key = api_key.encode("latin-1") if api_key else None
        # request ids: a random per-process prefix and a counter, 32 hex digits like a uuid4 but
        # unique without drawing 16 random bytes per request (uuid4 was 4.6% of /predict's CPU)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()

    def request_id(self, scope: Scope) -> bytes:
        given = _header(scope, b"x-request-id")
        if given and _SAFE_ID.match(given):
            return given.encode("latin-1")
        return f"{self._id_prefix}{next(self._id_counter) & 0xFFFFFFFFFFFFFFFF:016x}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        request_id = self.request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            if OVER_LIMIT in scope.get("extensions", ()):  # see service.protocol
                refusal = overloaded(OVER_LIMIT_MESSAGE)
                reply = error_response(refusal.error_type, refusal.message,
                                       {**refusal.headers, "Connection": "close"})
                await reply(scope, receive, send_with_id)
            elif self.api_key and path not in PUBLIC_PATHS and not authorised(scope, self.api_key):
                reply = error_response(ErrorType.unauthorized, "missing or wrong API key",
                                       {"WWW-Authenticate": "Bearer"})
                await reply(scope, receive, send_with_id)
            elif path == "/predict" and scope["method"] == "POST":
                await fast_predict(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.count_request(endpoint_label(path), status, time.perf_counter() - start)

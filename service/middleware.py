"""Pure ASGI middleware: request id, API key, request metrics. (BaseHTTPMiddleware would add a
task and a copy per request.)

It also short-cuts `POST /predict`, the hot path: routing it through Starlette's router, the
exception and exit-stack middlewares and FastAPI's request handler cost more CPU per request
than the model does (bench/asgi.py). The middleware calls the route's handler
(`service.routes.predict`, which takes no dependencies) itself and maps what it raises with the
app's own exception handlers, as ExceptionMiddleware would; anything unhandled goes on to
ServerErrorMiddleware (500) as before. Same answers, headers and metrics; every other method and
path takes the normal route.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorType, error_response
from service.metrics import Metrics, endpoint_label
from service.routes import predict

PUBLIC_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _authorised(scope: Scope, api_key: bytes) -> bool:
    given = _header(scope, b"x-api-key")
    if given is None:
        auth = _header(scope, b"authorization") or ""
        given = auth[7:] if auth[:7].lower() == "bearer " else ""
    # constant-time comparison: response timing must not reveal how much of the key matched
    return hmac.compare_digest(given.encode("latin-1"), api_key)


def _exception_handler(app: Any, exc: Exception) -> Any:
    """The handler ExceptionMiddleware would pick (status code, then class); None for the ones
    left to ServerErrorMiddleware (Exception / 500)."""
    handlers = app.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


async def fast_predict(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive, send)
    try:
        response = await predict(request)
    except Exception as exc:
        handler = _exception_handler(scope["app"], exc)
        if handler is None:
            raise
        response = await handler(request, exc)
    await response(scope, receive, send)


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None) -> None:
        self.app, self.metrics = app, metrics
        self.api_key = api_key.encode("latin-1") if api_key else None
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labelled metrics, cached

    def _count(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:  # endpoints and status codes are few: the cache stays small
            children = (self.metrics.requests.labels(endpoint=endpoint, status=str(status)),
                        self.metrics.request_duration.labels(endpoint=endpoint))
            self._children[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        given_id = _header(scope, b"x-request-id")
        request_id = (given_id if given_id and _SAFE_ID.match(given_id)
                      else uuid.uuid4().hex).encode("latin-1")
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            if self.api_key and path not in PUBLIC_PATHS and not _authorised(scope, self.api_key):
                reply = error_response(ErrorType.unauthorized, "missing or wrong API key",
                                       {"WWW-Authenticate": "Bearer"})
                await reply(scope, receive, send_with_id)
            elif path == "/predict" and scope["method"] == "POST":
                await fast_predict(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self._count(endpoint_label(path), status, time.perf_counter() - start)

"""Pure ASGI middleware: request id, API key, request metrics. (BaseHTTPMiddleware would add a
task and a copy per request.)"""

from __future__ import annotations

import hmac
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorType, error_response
from service.metrics import Metrics, endpoint_label

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


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None) -> None:
        self.app, self.metrics = app, metrics
        self.api_key = api_key.encode("latin-1") if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        endpoint = endpoint_label(scope["path"])
        given_id = _header(scope, b"x-request-id")
        request_id = given_id if given_id and _SAFE_ID.match(given_id) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            if self.api_key and scope["path"] not in PUBLIC_PATHS and not _authorised(scope, self.api_key):
                reply = error_response(ErrorType.unauthorized, "missing or wrong API key",
                                       {"WWW-Authenticate": "Bearer"})
                await reply(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=endpoint).observe(
                time.perf_counter() - start)

"""The error family, its status codes, and the one JSON error body: {"error", "error_type"}.

Every failure a client can see goes through `error_response`, so the shape never varies (the
protocol layer, which answers before any app, writes the same shape with `raw_error`).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from http import HTTPStatus

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.responses import JSONResponse

log = logging.getLogger("textclf.errors")


# ASGI scope["extensions"] key set by service.protocol: uvicorn refused this request at its
# limit_concurrency, and service.middleware answers it
OVER_LIMIT = "textclf.over_limit"


class ErrorType(StrEnum):
    empty = "empty"
    bad_request = "bad_request"
    unauthorized = "unauthorized"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    payload_too_large = "payload_too_large"
    request_timeout = "request_timeout"
    headers_too_large = "headers_too_large"
    unsupported_media_type = "unsupported_media_type"
    validation = "validation"
    invalid_artifact = "invalid_artifact"
    overloaded = "overloaded"
    internal = "internal"
    unhealthy = "unhealthy"


STATUS: dict[ErrorType, int] = {
    ErrorType.empty: 400,
    ErrorType.bad_request: 400,  # malformed HTTP (service.server's protocol), other plain 400s
    ErrorType.unauthorized: 401,
    ErrorType.not_found: 404,
    ErrorType.method_not_allowed: 405,
    ErrorType.payload_too_large: 413,
    ErrorType.request_timeout: 408,  # the body did not arrive in time; the connection is closed
    ErrorType.headers_too_large: 431,  # sent by service.server's protocol, before the app
    ErrorType.unsupported_media_type: 415,
    ErrorType.validation: 422,
    ErrorType.invalid_artifact: 409,  # reload refused: the artifact on disk is bad, old model serves
    ErrorType.overloaded: 429,
    ErrorType.internal: 500,
    ErrorType.unhealthy: 503,
}
_TYPE_OF_STATUS = {status: kind for kind, status in STATUS.items()}


def raw_error(error_type: ErrorType, message: str) -> bytes:
    """A complete HTTP/1.1 error response, for the protocol layer (no ASGI app involved); the
    connection is closed after it."""
    status = STATUS[error_type]
    body = orjson.dumps({"error": message, "error_type": error_type.value})
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class ServiceError(Exception):
    """Raise anywhere in the service; the handler turns it into the JSON error body."""

    def __init__(self, error_type: ErrorType, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.error_type, self.message, self.headers = error_type, message, headers or {}

    @property
    def status(self) -> int:
        return STATUS[self.error_type]


def overloaded(message: str = "the request queue is full; retry later",
               retry_after_s: int = 1) -> ServiceError:
    return ServiceError(ErrorType.overloaded, message, {"Retry-After": str(retry_after_s)})


def error_response(error_type: ErrorType, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type.value},
                          status_code=STATUS[error_type], headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _on_service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.error_type, exc.message, exc.headers)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(ErrorType.validation, _describe_validation(exc))


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _TYPE_OF_STATUS.get(exc.status_code, ErrorType.validation)
    return error_response(kind, str(exc.detail), getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Internals go to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ErrorType.internal, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)

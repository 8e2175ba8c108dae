"""Reading request bodies: size limit, media type, JSON or plain text, schema validation.

Done by hand (not by FastAPI's body parameters) so /predict can also take `text/plain`, so the
size limit holds before anything is parsed, and so every failure maps to the one error shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from service.config import Settings
from service.errors import ErrorType, ServiceError

M = TypeVar("M", bound=BaseModel)
JSON_TYPES = ("application/json", "")


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_declared_length(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(ErrorType.payload_too_large, f"body is over {limit} bytes")


async def collect(chunks: AsyncIterator[bytes], settings: Settings) -> bytes:
    """The body, counted while it arrives (chunked bodies declare no length), within
    TEXTCLF_BODY_TIMEOUT_S: a client that sends its headers and then trickles (or withholds) its
    body gets 408 and its connection closed, instead of holding it open indefinitely."""
    limit, parts, size = settings.max_body_bytes, [], 0
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ServiceError(ErrorType.payload_too_large, f"body is over {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise ServiceError(ErrorType.request_timeout, f"the body did not arrive within "
                           f"{settings.body_timeout_s:g} s", {"Connection": "close"}) from None
    return b"".join(parts)


async def read_body(request: Request, settings: Settings) -> bytes:
    check_declared_length(request.headers.get("content-length"), settings.max_body_bytes)
    return await collect(request.stream(), settings)


async def receive_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """Body chunks straight from ASGI messages (the /predict fast path: no Request object)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ServiceError(ErrorType.validation, "body is empty; expected a JSON object")
    try:
        return orjson.loads(body)  # also refuses invalid UTF-8 and absurd nesting depth
    except orjson.JSONDecodeError as exc:
        raise ServiceError(ErrorType.validation, f"malformed JSON: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


async def read_model(request: Request, model: type[M], settings: Settings, *,
                     plain_text_field: str | None = None) -> M:
    """The body as `model`: JSON, or with `plain_text_field` a text/plain body put into it."""
    kind = media_type(request.headers.get("content-type", ""))
    return parse_body(model, kind, await read_body(request, settings), plain_text_field)


def parse_body(model: type[M], kind: str, body: bytes, plain_text_field: str | None = None) -> M:
    if kind == "text/plain" and plain_text_field:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError(ErrorType.validation, "text/plain body is not valid UTF-8") from None
        return validate(model, {plain_text_field: text})
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        accepted = "application/json" + (" or text/plain" if plain_text_field else "")
        raise ServiceError(ErrorType.unsupported_media_type,
                           f"content-type {kind!r} is not supported; send {accepted}")
    return validate(model, parse_json(body))


def openapi_body(model: type[BaseModel], plain_text: bool = False) -> dict[str, Any]:
    """`openapi_extra` documenting a body that the handler reads by hand."""
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}
    if plain_text:
        content["text/plain"] = {"schema": {"type": "string", "minLength": 1, "pattern": r"\S"}}
    return {"requestBody": {"required": True, "content": content}}

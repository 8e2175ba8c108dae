"""The common POST /predict taken in one call from `data_received`: no parser callbacks, no
task, no pydantic. The fast lane's hot path under load.

Why: per request, httptools' callbacks and uvicorn's scope, the lane's task and coroutines, the
route's context managers, pydantic and a future cost more CPU than the model's share of a
forward pass. Here a request whose head and body came in one read is parsed with one regex,
checked by hand, tokenized and queued; the batcher hands the result to a `DirectReply`, which
writes the response from its `set_result`, in the batcher's own loop over the pass's jobs.

Only what this module can answer exactly as the app would is taken. Anything else, or any check
that fails, leaves the bytes to service.fastlane and uvicorn as before (they answer errors):
- exactly `POST /predict HTTP/1.1`, every header a token, a colon and visible ASCII;
  Content-Length once and equal to the body (nothing pipelined behind it); no
  Transfer-Encoding, Expect or Upgrade; Connection only `keep-alive` or `close`;
- a JSON (or text/plain) body that is what PredictRequest accepts, with types checked exactly
  (`True` is no `top_k`) and no field it does not know; the route's limits on texts and tokens;
- a model loaded, and room in the batcher's queue.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from service.batcher import JobResult
from service.body import JSON_TYPES
from service.errors import ServiceError
from service.fastlane import FastRequest, Lane, Writer, answer_error, give_up, write_answer
from service.inference import (
    INLINE_TOKENIZE_CHARS,
    check_texts,
    fit_to_limit,
    label_scores,
    log_inputs,
    record_tokens,
)
from service.routes import predict_reply
from service.schemas import MAX_INPUTS, MAX_TOP_K, PredictRequest
from service.state import Serving

REQUEST_LINE = b"POST /predict HTTP/1.1\r\n"
# header lines, each ending in CRLF; what httptools would refuse (or might read otherwise:
# obs-fold, bytes over 0x7e, space before the colon) does not match and goes to it instead
HEADER_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*")
LEFT_TO_HTTPTOOLS = (b"transfer-encoding", b"expect", b"upgrade")
FIELDS = frozenset(PredictRequest.model_fields)  # it forbids any other
DIRECTIONS = {"right": False, "Right": False, "left": True, "Left": True}  # -> from the left


Spawn = Callable[[Coroutine[Any, Any, None]], None]  # runs a coroutine as the protocol's task


@dataclass(frozen=True, slots=True)
class Head:
    headers: list[tuple[bytes, bytes]]  # names lower case, as uvicorn's scope has them
    keep_alive: bool
    body: bytes


def parse_head(data: bytes) -> Head | None:
    """The head and body of one complete POST /predict in `data`, or None (see the module)."""
    if not data.startswith(REQUEST_LINE):
        return None
    end = data.find(b"\r\n\r\n", len(REQUEST_LINE) - 2)
    if end < len(REQUEST_LINE) or not HEADER_LINES.fullmatch(data, len(REQUEST_LINE), end + 2):
        return None  # the head does not end here, or has no headers (so no Content-Length)
    headers, keep_alive, length = [], True, None
    for line in data[len(REQUEST_LINE):end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        name, value = name.lower(), value.lstrip(b" \t")  # httptools keeps trailing space
        if name == b"content-length":
            if length is not None:
                return None
            length = value
        elif name == b"connection":
            token = value.strip().lower()
            if token not in (b"keep-alive", b"close"):
                return None
            keep_alive = token == b"keep-alive"
        elif name in LEFT_TO_HTTPTOOLS:
            return None
        headers.append((name, value))
    body = data[end + 4:]
    if length is None or not length.isdigit() or int(length) != len(body):
        return None
    return Head(headers, keep_alive, body)


@dataclass(frozen=True, slots=True)
class Inputs:
    texts: list[str]
    single: bool
    raw_scores: bool = False
    truncate: bool = True
    left: bool = False
    top_k: int | None = None


def read_inputs(media: str, body: bytes) -> Inputs | None:
    """The request's fields, when the body is what PredictRequest takes as is; else None."""
    if media == "text/plain":
        try:
            return Inputs([body.decode("utf-8")], True)
        except UnicodeDecodeError:
            return None
    if media not in JSON_TYPES and not media.endswith("+json"):
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= FIELDS:
        return None
    texts: Any = data.get("inputs")
    single = type(texts) is str
    if not (single or (type(texts) is list and len(texts) <= MAX_INPUTS
                       and all(type(t) is str for t in texts))):
        return None
    raw_scores, truncate = data.get("raw_scores", False), data.get("truncate", True)
    direction = data.get("truncation_direction", "right")
    left = DIRECTIONS.get(direction) if type(direction) is str else None
    top_k = data.get("top_k")
    if (type(raw_scores) is not bool or type(truncate) is not bool or left is None
            or not (top_k is None or (type(top_k) is int and 1 <= top_k <= MAX_TOP_K))):
        return None
    return Inputs([texts] if single else texts, single, raw_scores, truncate, left, top_k)


@dataclass(frozen=True, slots=True)
class Ready:
    """A request checked and tokenized, not yet queued: nothing has been changed so far."""
    inputs: Inputs
    encoded: list[list[int]]
    tokenize_seconds: float


def prepare(serving: Serving, inputs: Inputs, lane: Lane) -> Ready | None:
    """The route's checks and tokenizing, by the same functions; None where one fails."""
    settings, predictor = lane.state.settings, serving.predictor
    texts = inputs.texts
    try:
        check_texts(texts, settings)
    except ServiceError:
        return None
    if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:
        return None  # the route tokenizes it on a thread
    tick = time.perf_counter()
    try:
        encoded = fit_to_limit([predictor.encode(t) for t in texts], predictor.max_tokens,
                               inputs.truncate, inputs.left)
    except ServiceError:
        return None
    seconds = time.perf_counter() - tick
    return Ready(inputs, encoded, seconds) if serving.batcher.takes(len(encoded)) else None


def queue(lane: Lane, writer: Writer, request: FastRequest, serving: Serving, ready: Ready,
          spawn: Spawn) -> None:
    """Queue a prepared request; its response is written when its pass ends."""
    state = lane.state
    log_inputs(ready.inputs.texts, state.settings)
    record_tokens(state.metrics, ready.encoded, ready.tokenize_seconds)
    serving.hold()
    serving.batcher.enqueue(ready.encoded, DirectReply(lane, writer, request, serving,
                                                       ready.inputs, spawn))


class DirectReply:
    """The batcher's receiver for one direct request (service.batcher.Receiver)."""

    __slots__ = ("lane", "writer", "request", "serving", "inputs", "spawn")

    def __init__(self, lane: Lane, writer: Writer, request: FastRequest, serving: Serving,
                 inputs: Inputs, spawn: Spawn) -> None:
        self.lane, self.writer, self.request = lane, writer, request
        self.serving, self.inputs, self.spawn = serving, inputs, spawn

    def done(self) -> bool:
        return False  # as the lane's future: a reply to a gone client still counts

    def set_result(self, result: JobResult) -> None:
        """Called in the batcher's loop over a pass's jobs: must not raise."""
        lane, inputs = self.lane, self.inputs
        try:
            body = label_scores(self.serving, result, inputs.single, raw_scores=inputs.raw_scores,
                                top_k=inputs.top_k, metrics=lane.state.metrics)
        except Exception:  # noqa: BLE001 - see give_up
            give_up(lane, self.writer, self.request)
            return
        finally:
            self.serving.release()
        write_answer(lane, self.writer, self.request, lambda: (200, *predict_reply(body, result)))

    def set_exception(self, exception: BaseException) -> None:
        self.serving.release()
        exc = exception if isinstance(exception, Exception) else RuntimeError(str(exception))
        self.spawn(answer_error(self.lane, self.writer, self.request, exc))

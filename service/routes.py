"""HTTP handlers: thin. They read the request, call inference / the predictor, shape the reply."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
import torch
from fastapi import APIRouter, Depends, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service import __version__
from service.batcher import JobResult
from service.body import media_type, openapi_body, parse_body, read_body, read_model, validate
from service.errors import ErrorType, ServiceError
from service.inference import (
    INLINE_TOKENIZE_CHARS,
    as_list,
    feature_vectors,
    label_scores,
    prepare,
)
from service.responses import JSONResponse
from service.schemas import (
    ErrorBody,
    Health,
    JSONObject,
    PredictRequest,
    TextsRequest,
    TokenInfo,
    TokenizeRequest,
    WordsRequest,
    WordsResponse,
)
from service.state import ServiceState, Serving

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 413, 415, 422, 429, 503)}
router = APIRouter(responses=ERRORS)


def get_state(request: Request) -> ServiceState:
    return request.app.state.textclf


async def get_serving(state: Annotated[ServiceState, Depends(get_state)]) -> AsyncIterator[Serving]:
    """The model for this request. Held until the request ends, so a hot reload retires the old
    model only after the requests using it are done (async: taken on the event loop, atomically
    with respect to the swap)."""
    with state.use() as serving:
        yield serving


StateDep = Annotated[ServiceState, Depends(get_state)]
ServingDep = Annotated[Serving, Depends(get_serving)]


def timing_headers(result: JobResult) -> list[tuple[bytes, bytes]]:
    """Per-phase timings of a /predict answer (as text-embeddings-inference's x-*-time)."""
    return [(b"x-queue-time", b"%.3f" % (result.queue_seconds * 1000)),
            (b"x-inference-time", b"%.3f" % (result.inference_seconds * 1000)),
            (b"x-batch-size", b"%d" % result.batch_size)]


def timing_header_map(result: JobResult) -> dict[str, str]:
    """`timing_headers` for a starlette Response."""
    return {name.decode(): value.decode() for name, value in timing_headers(result)}


def predict_reply(body: object, result: JobResult) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """/predict's 200 as raw bytes: the JSON payload and its headers (both fast paths)."""
    payload = orjson.dumps(body)
    return payload, [(b"content-type", b"application/json"),
                     (b"content-length", b"%d" % len(payload)), *timing_headers(result)]


async def classify(state: ServiceState, kind: str,
                   read: Callable[[], Awaitable[bytes]]) -> tuple[object, JobResult]:
    """/predict without HTTP objects: the body (media type `kind`, read by `read`) -> the reply
    body and the batch result. Shared by the route below, service.middleware's fast path and
    service.fastlane."""
    settings = state.settings
    with state.use() as serving:
        serving.batcher.check_room()
        with serving.batcher.expecting():
            req = parse_body(PredictRequest, kind, await read(), plain_text_field="inputs")
            encoded = await prepare(serving, as_list(req.inputs), truncate=req.truncate,
                                    left=req.truncation_direction.lower() == "left",
                                    settings=settings, metrics=state.metrics)
        result = await serving.batcher.submit(encoded)
        body = label_scores(serving, result, isinstance(req.inputs, str),
                            raw_scores=req.raw_scores, top_k=req.top_k, metrics=state.metrics)
    return body, result


@router.post("/predict", openapi_extra=openapi_body(PredictRequest, plain_text=True),
             summary="Classify one text or a list of texts", tags=["inference"])
async def predict(request: Request) -> Response:
    """text-embeddings-inference compatible: one text gives `[{label, score}, ...]` best first;
    a list gives a list of those, in order."""
    # service.middleware answers POST /predict itself (the same `classify`, fewer layers); this
    # route documents it and serves it when the app runs without that middleware.
    state: ServiceState = request.app.state.textclf
    body, result = await classify(state, media_type(request.headers.get("content-type", "")),
                                  lambda: read_body(request, state.settings))
    return JSONResponse(body, headers=timing_header_map(result))


def _words_reply(serving: Serving, req: WordsRequest) -> JSONResponse:
    predictor = serving.predictor
    vectors = predictor.word_vectors(req.words, req.normalize, req.neighbors)
    return JSONResponse({"dim": int(predictor.embedding.shape[1]), "vectors": vectors})


@router.get("/embed", response_model=WordsResponse, tags=["embeddings"],
            summary="Word vectors from the model's embedding layer")
async def embed_words(serving: ServingDep,
                      word: Annotated[list[str], Query(min_length=1, max_length=1000)],
                      normalize: bool = False,
                      neighbors: Annotated[int, Query(ge=0, le=100)] = 0) -> Response:
    return _words_reply(serving, WordsRequest(words=word, normalize=normalize, neighbors=neighbors))


@router.post("/embed", tags=["embeddings"],
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"oneOf": [WordsRequest.model_json_schema(),
                                      TextsRequest.model_json_schema()]}}}}},
             summary="Word vectors ({words}) or pooled text vectors ({inputs})")
async def embed(request: Request, state: StateDep, serving: ServingDep) -> Response:
    with serving.batcher.expecting():
        data = (await read_model(request, JSONObject, state.settings)).root
        if "words" in data:  # a table lookup: no queue involved
            return _words_reply(serving, validate(WordsRequest, data))
        serving.batcher.check_room()  # before tokenizing
        req = validate(TextsRequest, data)
        encoded = await prepare(serving, as_list(req.inputs), truncate=req.truncate,
                                settings=state.settings, metrics=state.metrics)
    result = await serving.batcher.submit(encoded)
    return JSONResponse(feature_vectors(result, req.normalize), headers=timing_header_map(result))


@router.post("/tokenize", response_model=list[list[TokenInfo]], tags=["inference"],
             openapi_extra=openapi_body(TokenizeRequest), summary="Tokens with ids and offsets")
async def tokenize(request: Request, state: StateDep, serving: ServingDep) -> Response:
    req = await read_model(request, TokenizeRequest, state.settings)
    texts = as_list(req.inputs)
    if len(texts) > state.settings.max_client_batch:
        raise ServiceError(ErrorType.payload_too_large,
                           f"{len(texts)} inputs; at most {state.settings.max_client_batch}")
    for i, text in enumerate(texts):
        if len(text) > state.settings.max_input_chars:
            raise ServiceError(ErrorType.payload_too_large, f"input {i} has {len(text)} "
                               f"characters; at most {state.settings.max_input_chars}")

    def reply() -> list[list[dict]]:
        return [[{"id": t.id, "text": t.text, "unk": t.unk, "special": False,
                  "start": t.start, "stop": t.stop}
                 for t in serving.predictor.tokenize(text)] for text in texts]

    # long inputs off the event loop, as for /predict (NFKC with offsets is pure Python)
    big = sum(map(len, texts)) > INLINE_TOKENIZE_CHARS
    return JSONResponse(await run_in_threadpool(reply) if big else reply())


@router.get("/info", tags=["service"], summary="Model, limits and versions")
async def info(state: StateDep, serving: ServingDep) -> Response:
    s = state.settings
    return JSONResponse({
        **serving.predictor.info(),
        "max_batch_size": s.max_batch_size, "max_batch_delay_ms": s.max_batch_delay_ms,
        "max_queue_size": s.max_queue_size, "max_client_batch": s.max_client_batch,
        "max_input_chars": s.max_input_chars, "max_body_bytes": s.max_body_bytes,
        "textclf_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    })


def _health(state: ServiceState) -> JSONResponse:
    if not state.ready:
        status = "shutting_down" if state.shutting_down else "loading"
        return JSONResponse({"status": status, "error": f"not ready: {status}",
                             "error_type": ErrorType.unhealthy.value}, status_code=503)
    assert state.serving is not None
    return JSONResponse({"status": "ok", "model_version": state.serving.predictor.version})


@router.get("/health/live", response_model=Health, tags=["service"])
async def live() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/health/ready", response_model=Health, tags=["service"])
async def ready(state: StateDep) -> Response:
    return _health(state)


@router.get("/health", response_model=Health, tags=["service"])
async def health(state: StateDep) -> Response:
    return _health(state)


@router.get("/metrics", tags=["service"], summary="Prometheus text format",
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {
                "type": "string"}}}, "description": "Prometheus text exposition format"}})
async def metrics(state: StateDep) -> Response:
    # on a thread: with TEXTCLF_WORKERS > 1 a scrape reads and merges every worker's files
    # (4-6 ms with 2 workers, up to 21 ms seen), and the loop would answer nothing meanwhile
    return Response(await run_in_threadpool(state.metrics.render), media_type=CONTENT_TYPE_LATEST)

"""POST /explain: per-token attributions and LSTM gate activations for one text (model.explain).

    curl -X POST localhost:8000/explain -H 'content-type: application/json' \
         -d '{"inputs": "the team won the cup", "target": null, "method": "occlusion"}'

An explanation costs tens of forward and backward passes, so it never goes through the /predict
batcher: it runs in the thread pool, one explanation at a time per process (they use every
intra-op thread anyway), with at most MAX_WAITING requests waiting for their turn; beyond that
429 `overloaded`. Texts are cut to the served model's token limit as /predict cuts them; more
than TEXTCLF_MAX_EXPLAIN_TOKENS tokens after that is 422 `validation`, as are an unknown target
label or method. An empty text is 400 `empty` and an over-long one 413, as for /predict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import Field, StrictBool, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from model.explain import ExplainError, check_options, explain, select_tokens
from service.body import openapi_body, read_model
from service.errors import ErrorType, ServiceError, overloaded
from service.inference import check_texts
from service.responses import JSONResponse
from service.routes import ERRORS, ServingDep, StateDep
from service.schemas import Strict, Text

MAX_WAITING = 16  # explanations queued behind the running one; more -> 429

RESPONSES: dict[int | str, dict[str, Any]] = {status: dict(doc) for status, doc in ERRORS.items()}
router = APIRouter(responses=RESPONSES)


class ExplainRequest(Strict):
    inputs: Text = Field(description="the text to explain")
    target: StrictStr | None = Field(None, description="label to explain (default: predicted)")
    method: Literal["integrated_gradients", "occlusion"] = Field(
        "integrated_gradients", description="integrated gradients toward the target logit, or "
        "the drop in the target's probability when each token is replaced by <pad>")
    detail: StrictBool = Field(False, description="add every gate's full vector per token")


class _Turns:
    """One explanation at a time, at most MAX_WAITING more waiting (per app, on its loop)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.lock.locked() and self.waiting >= MAX_WAITING:
            raise overloaded()
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.lock.release()


def _turns(app: FastAPI) -> _Turns:
    turns = getattr(app.state, "explain_turns", None)
    if turns is None:
        turns = app.state.explain_turns = _Turns()
    return turns


@router.post("/explain", openapi_extra=openapi_body(ExplainRequest), tags=["inference"],
             summary="Per-token attributions and LSTM gate activations for one text")
async def explain_text(request: Request, state: StateDep, serving: ServingDep) -> Response:
    """The prediction, each token's attribution toward the target label (integrated gradients
    with the completeness check, or occlusion), and per token, layer and direction the means
    of the input / forget / output gates and the cell-state norm."""
    settings, predictor = state.settings, serving.predictor
    req = await read_model(request, ExplainRequest, settings)
    check_texts([req.inputs], settings)
    job = partial(explain, predictor.artifact, req.inputs, req.target, req.method, req.detail,
                  max_tokens=settings.max_explain_tokens, max_length=predictor.max_tokens)
    try:
        check_options(predictor.labels, req.target, req.method)  # refuse before queueing
        select_tokens(predictor.artifact, req.inputs, settings.max_explain_tokens,
                      predictor.max_tokens)
        async with _turns(request.app).turn():
            body = await run_in_threadpool(job)
    except ExplainError as exc:
        raise ServiceError(ErrorType.validation, str(exc)) from None
    return JSONResponse({**body, "model_version": predictor.version})

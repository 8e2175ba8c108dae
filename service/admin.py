"""Operator actions: hot reload of the model, by HTTP or by signal.

    curl -X POST -H "Authorization: Bearer $TEXTCLF_API_KEY" http://host:8000/admin/reload
    kill -HUP <pid>

Both call `ServiceState.reload()`: load the artifact in TEXTCLF_MODEL_DIR again, check it
(sha256 of weights and vocabulary, config / vocabulary / weights consistent, one warm-up forward
pass), then swap it in with one assignment. Requests already holding the old model finish on it;
none fail. A bad artifact is refused (409 `invalid_artifact`, naming the file) and the old model
keeps serving.

The endpoint exists only when TEXTCLF_API_KEY is set (the middleware then requires the key, as on
every route but health and metrics); without a key it answers 404 `not_found`, so an open
service never offers an unauthenticated way to make it reload. SIGHUP needs access to the host or
container, so it always works. With TEXTCLF_WORKERS > 1, send SIGHUP to the parent process:
uvicorn then replaces the workers one by one, each loading the artifact afresh.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from model.artifact import ArtifactError
from service.errors import ErrorType, ServiceError
from service.responses import JSONResponse
from service.schemas import ErrorBody
from service.state import ServiceState

log = logging.getLogger("textclf.admin")

router = APIRouter(prefix="/admin", tags=["admin"])


class Reloaded(BaseModel):
    status: str = Field(description='"reloaded"')
    model_version: str = Field(description="the version now serving")
    previous_version: str | None = Field(description="the version served before")
    weights_sha256: str
    seconds: float = Field(description="time to load, check, warm up and swap")


async def reload_model(state: ServiceState) -> dict:
    """Reload, with every failure turned into a ServiceError (the old model keeps serving)."""
    if state.shutting_down:
        raise ServiceError(ErrorType.unhealthy, "shutting down; no reload")
    previous = state.serving.predictor.version if state.serving is not None else None
    started = time.perf_counter()
    try:
        predictor = await state.reload()
    except ServiceError:
        raise
    except ArtifactError as exc:
        log.error("reload refused, still serving %s: %s", previous, exc)
        raise ServiceError(ErrorType.invalid_artifact, f"reload refused, still serving "
                           f"{previous}: TEXTCLF_MODEL_DIR: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. the warm-up forward pass failed
        log.exception("reload failed, still serving %s", previous)
        raise ServiceError(ErrorType.invalid_artifact, f"reload refused, still serving "
                           f"{previous}: {type(exc).__name__}: {str(exc)[:300]}") from None
    return {"status": "reloaded", "model_version": predictor.version,
            "previous_version": previous, "weights_sha256": predictor.artifact.sha256,
            "seconds": round(time.perf_counter() - started, 3)}


@router.post("/reload", response_model=Reloaded, summary="Reload the model from TEXTCLF_MODEL_DIR",
             responses={404: {"model": ErrorBody, "description": "TEXTCLF_API_KEY is not set"},
                        409: {"model": ErrorBody, "description": "bad artifact; old model serves"},
                        401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def reload(request: Request) -> Response:
    """Load, check and warm up the artifact, then swap it in; requests in flight finish on the
    old model. Only when TEXTCLF_API_KEY is set (and given)."""
    state: ServiceState = request.app.state.textclf
    if state.settings.api_key is None:
        raise ServiceError(ErrorType.not_found,
                           "/admin/reload is disabled: it needs TEXTCLF_API_KEY to be set")
    return JSONResponse(await reload_model(state))


async def _reload_on_signal(state: ServiceState) -> None:
    log.info("SIGHUP: reloading the model from %s", state.settings.model_dir)
    try:
        result = await reload_model(state)
    except ServiceError as exc:
        if exc.error_type is not ErrorType.invalid_artifact:  # that one reload_model logged
            log.warning("SIGHUP: %s", exc.message)
    else:
        log.info("SIGHUP: now serving %s (was %s)", result["model_version"],
                 result["previous_version"])


def install_sighup(state: ServiceState) -> Callable[[], None]:
    """SIGHUP -> reload, on the running loop; returns the function that removes the handler.

    Does nothing where signals cannot be handled here (not the main thread, as under a test
    client, or no SIGHUP on the platform)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = loop.create_task(_reload_on_signal(state), name="textclf-sighup-reload")
        tasks.add(task)  # keep a reference until done
        task.add_done_callback(tasks.discard)

    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return lambda: None
    try:
        loop.add_signal_handler(sighup, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):
        log.debug("SIGHUP reload not available here (not the main thread)")
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(sighup)

    return remove

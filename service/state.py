"""What the app holds while it runs: settings, metrics, and the model being served.

The model and its batcher travel together as a `Serving`; a reload builds a complete new one
off the event loop (load, verify, warm up) and swaps the reference in one assignment, so every
request uses either the old model or the new one, never a mix. A request holds its `Serving`
from start to end (`use`, the routes' dependency); the old one is retired only once no request
holds it any more, so requests in flight finish on the old model and none fail.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from model.device import DTYPES, native_dtype, resolve_device
from service.balance import ConnectionBalance
from service.batcher import Batcher
from service.config import Settings
from service.cpus import usable_cpus
from service.errors import ErrorType, ServiceError
from service.metrics import Metrics
from service.predictor import Predictor

log = logging.getLogger("textclf.state")


def find_app(asgi_app: Any) -> Any:
    """The app inside uvicorn's wrappers (proxy headers and the like): the first object with a
    `state`, or None."""
    app = asgi_app
    while app is not None and not hasattr(app, "state"):
        app = getattr(app, "app", None)
    return app


def service_state(asgi_app: Any) -> ServiceState | None:
    """The ServiceState of textclf's app inside uvicorn's wrappers, or None for another app."""
    state = getattr(getattr(find_app(asgi_app), "state", None), "textclf", None)
    return state if isinstance(state, ServiceState) else None


def settle_heap() -> None:
    """Collect, then freeze what survives (torch, FastAPI, the model, the app) out of the cyclic
    GC's reach. Serving allocates fast enough to trigger a full collection every few seconds,
    and each one walked that whole heap with the event loop stopped: at concurrency 64, p99 was
    97 ms without this, 21 ms with it (bench/serving.py). Refcounting still frees frozen objects;
    a reload unfreezes first, so a retired model's reference cycles are collected."""
    gc.collect()
    gc.freeze()


def forward_placement(settings: Settings, device: torch.device, scripted: bool = False,
                      cores: float | None = None) -> str:
    """service.passes.Placement's mode: TEXTCLF_INFERENCE_THREAD true -> "thread", false ->
    "loop". Unset: "thread" on a GPU (the event loop works while kernels run). On the CPU
    "overlap" when the pass can run without the GIL (`scripted`, model.scripted) and the
    process has a core to spare (`cores`, default: service.cpus.usable_cpus, over TEXTCLF_WORKERS):
    the loop then serves requests on one core while the model computes on another (1 worker,
    2 cores, concurrency 64: ~+45 % requests/s). Otherwise "auto": a pass holds one core
    whichever thread runs it, so short ones run on the loop and skip the hand-off."""
    if settings.inference_thread is not None:
        return "thread" if settings.inference_thread else "loop"
    if device.type != "cpu":
        return "thread"
    if cores is None:
        cores = usable_cpus()
    return "overlap" if scripted and cores > settings.workers else "auto"


@dataclass
class Serving:
    predictor: Predictor
    batcher: Batcher
    users: int = 0  # requests holding this model (ServiceState.use)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when users drops to 0

    def hold(self) -> None:
        """A request starts using this model (`release` when it ends)."""
        self.users += 1
        self.idle.clear()

    def release(self) -> None:
        self.users -= 1
        if not self.users:
            self.idle.set()

    async def retire(self, timeout_s: float) -> None:
        """After a swap: wait (at most `timeout_s`) for the requests still using it, then close."""
        if self.users:
            try:
                await asyncio.wait_for(self.idle.wait(), timeout_s)
            except TimeoutError:
                log.warning("%d request(s) still on the old model after %.0f s; closing it",
                            self.users, timeout_s)
        await self.batcher.close(timeout_s)


class ServiceState:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.balance = (ConnectionBalance(settings.multiproc_dir, metrics.rebalanced.inc)
                        if settings.workers > 1 and settings.multiproc_dir
                        and settings.balance_connections else None)
        self.serving: Serving | None = None
        self.shutting_down = False
        self._reload_lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.serving is not None and not self.shutting_down

    def _load_predictor(self) -> Predictor:
        """Blocking: load and cross-check the artifact, then one warm-up forward pass."""
        s = self.settings
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        device, dtype = resolve_device(s.device), DTYPES[s.dtype]
        if not native_dtype(dtype, device):
            log.warning("TEXTCLF_DTYPE=%s: %s has no %s arithmetic; it is emulated and slower "
                        "than float32", s.dtype, device, s.dtype)
        predictor = Predictor.load(s.model_dir, device, s.max_tokens, dtype)
        predictor.warmup()
        return predictor

    def _new_serving(self, predictor: Predictor) -> Serving:
        s = self.settings
        batcher = Batcher(predictor, self.metrics, s.max_batch_size, s.max_batch_delay_ms / 1000,
                          s.max_queue_size,
                          forward_placement(s, predictor.device, predictor.scripted is not None))
        batcher.start()
        return Serving(predictor, batcher)

    async def start(self) -> None:
        predictor = await run_in_threadpool(self._load_predictor)
        self.serving = self._new_serving(predictor)
        self.metrics.set_model(predictor.version, str(predictor.device), predictor.dtype_name)
        self.metrics.ready.set(1)
        if self.balance is not None:
            self.balance.start()
        settle_heap()
        log.info("serving %s %s on %s", predictor.artifact.name, predictor.version,
                 predictor.device)

    async def reload(self) -> Predictor:
        """Load the artifact in model_dir again; on any error the current model keeps serving."""
        async with self._reload_lock:
            if self.shutting_down:
                raise ServiceError(ErrorType.unhealthy, "shutting down; no reload")
            try:
                predictor = await run_in_threadpool(self._load_predictor)
            except Exception:
                self.metrics.reloads.labels(result="failure").inc()
                raise
            if self.shutting_down:  # SIGTERM came while loading: keep what stop() is draining
                raise ServiceError(ErrorType.unhealthy, "shutting down; no reload")
            old, self.serving = self.serving, self._new_serving(predictor)
            self.metrics.set_model(predictor.version, str(predictor.device), predictor.dtype_name)
            self.metrics.reloads.labels(result="success").inc()
            log.info("reloaded: now serving %s", predictor.version)
        if old is not None:
            await old.retire(self.settings.shutdown_timeout_s)
            del old
            gc.unfreeze()  # the old model was frozen with the rest: make it collectable again
            settle_heap()
        return predictor

    def begin_shutdown(self) -> None:
        """Readiness turns 503 at once; requests already accepted still complete."""
        self.shutting_down = True
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        self.begin_shutdown()
        if self.balance is not None:
            self.balance.stop()
        if self.serving is not None:
            await self.serving.batcher.close(self.settings.shutdown_timeout_s)

    @contextmanager
    def use(self) -> Iterator[Serving]:
        """The model for one request, held until the request ends (a reload waits for it)."""
        serving = self.require_serving()
        serving.hold()
        try:
            yield serving
        finally:
            serving.release()

    def require_serving(self) -> Serving:
        if self.serving is None:
            raise ServiceError(ErrorType.unhealthy, "the model is not loaded yet")
        return self.serving

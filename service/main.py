"""create_app(settings, registry): the FastAPI application.

    uvicorn --factory service.main:create_app     # settings from TEXTCLF_* variables

Nothing happens at import time; the lifespan loads the model once, warms it up and only then
reports ready. Handlers reach it through typed dependencies (service.routes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from service import __version__
from service.admin import install_sighup
from service.admin import router as admin_router
from service.config import Settings
from service.docs import declare_api_key, install_docs
from service.errors import install_error_handlers
from service.explain_route import router as explain_router
from service.metrics import Metrics
from service.middleware import PUBLIC_PATHS, RequestMiddleware
from service.routes import router
from service.state import ServiceState

log = logging.getLogger("textclf.main")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.textclf
    await state.start()
    remove_sighup = install_sighup(state)  # SIGHUP -> hot reload (service.admin)
    try:
        yield
    finally:
        await state.stop()
        remove_sighup()
        state.metrics.flush()  # the last requests' buffered writes (service/metricbuffer.py)


class TextclfApp(FastAPI):
    """FastAPI with RequestMiddleware in front of everything for HTTP (not via add_middleware:
    there it would sit inside ServerErrorMiddleware and FastAPI's own layers, which /predict's
    fast path then still crossed on every request)."""

    front: RequestMiddleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self  # as Starlette.__call__ does; the fast path reads app.state
            await self.front(scope, receive, send)
        else:  # lifespan
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None,
               registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or Settings()
    multiproc = str(settings.multiproc_dir) if settings.multiproc_dir else None
    metrics = Metrics(registry or CollectorRegistry(), multiproc)
    app = TextclfApp(title="textclf", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Text classification with an LSTM: labels, word and text vectors, "
                              "tokens, Prometheus metrics.")
    app.state.textclf = ServiceState(settings, metrics)
    install_error_handlers(app)
    install_docs(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(explain_router)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.front = RequestMiddleware(partial(FastAPI.__call__, app), metrics, api_key)
    if api_key:
        declare_api_key(app, PUBLIC_PATHS)
    return app

"""Run the app under uvicorn: one process, or TEXTCLF_WORKERS processes sharing the port."""

from __future__ import annotations

import os
import tempfile
from types import FrameType

import torch
import uvicorn

from service.config import Settings
from service.logs import configure_logging, log_config


class Server(uvicorn.Server):
    """uvicorn.Server whose SIGTERM/SIGINT first turns readiness to 503, then drains."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = getattr(self.config, "loaded_app", None)
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)  # unwrap uvicorn's middleware proxies
        state = getattr(getattr(app, "state", None), "textclf", None)
        if state is not None:
            state.begin_shutdown()
        super().handle_exit(sig, frame)


def _uvicorn_options(settings: Settings) -> dict:
    return {
        "host": settings.host, "port": settings.port, "loop": "uvloop", "http": "httptools",
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": False, "timeout_graceful_shutdown": int(settings.shutdown_timeout_s) or None,
        "timeout_keep_alive": 5, "limit_concurrency": 4096, "backlog": 2048,
        "h11_max_incomplete_event_size": 64 * 1024,
    }


def serve(settings: Settings, device: torch.device) -> int:
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        return _serve_workers(settings)
    from service.main import create_app

    config = uvicorn.Config(create_app(settings), **_uvicorn_options(settings))
    server = Server(config)
    server.run()
    return 0 if server.started else 1


def _serve_workers(settings: Settings) -> int:
    """N processes; metrics go through prometheus-client's multiprocess files, so a scrape of
    any worker reports the sum over all of them."""
    directory = settings.multiproc_dir or tempfile.mkdtemp(prefix="textclf-metrics-")
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # stale files from an earlier run would add up
        os.remove(os.path.join(directory, name))
    # Workers are new processes: they read these at import time (prometheus-client) and in
    # Settings (TEXTCLF_MULTIPROC_DIR).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    os.environ["TEXTCLF_MULTIPROC_DIR"] = str(directory)
    uvicorn.run("service.main:create_app", factory=True, workers=settings.workers,
                **_uvicorn_options(settings))
    return 0

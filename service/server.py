"""Run the app under uvicorn: one process, or TEXTCLF_WORKERS processes sharing the port."""

from __future__ import annotations

import fcntl
import glob
import logging
import math
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType

import torch
import uvicorn

from service.config import Settings
from service.httpbase import MAX_HEAD_BYTES
from service.logs import configure_logging, log_config
from service.protocol import ServiceHttpProtocol
from service.state import service_state

log = logging.getLogger("textclf.server")


class Server(uvicorn.Server):
    """uvicorn.Server whose SIGTERM/SIGINT first turns readiness to 503, then drains, and whose
    process then exits 0.

    uvicorn's own handle_exit records the signal and re-raises it once the drain is over, so the
    process would die of SIGTERM (status 143) after a clean shutdown. A drain that completed is a
    clean exit here: the flags are set as uvicorn does (a second SIGINT forces the exit), without
    recording the signal."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = service_state(getattr(self.config, "loaded_app", None))
        if state is not None:
            state.begin_shutdown()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def uvicorn_options(settings: Settings) -> dict:
    return {
        "host": settings.host, "port": settings.port, "loop": "uvloop",
        "http": ServiceHttpProtocol,
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": False, "timeout_graceful_shutdown": max(1, math.ceil(settings.shutdown_timeout_s)),
        "timeout_keep_alive": 5, "limit_concurrency": 4096, "backlog": 2048,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        # workers: uvicorn kills a worker that does not answer its ping within this; importing
        # torch on a busy machine took longer than uvicorn's 5 s, so the first worker was killed
        # and started again
        "timeout_worker_healthcheck": 60,
    }


# Torch intra-op threads per process when TEXTCLF_NUM_THREADS is unset. One: the batcher already
# gives the model one core of its own (the event loop runs on another), and a second OpenMP
# thread then only competes with the event loop and the other workers: on 2 cores it made a
# 32-text forward pass several times slower (bench/inprocess.py, bench/serving.py).
DEFAULT_TORCH_THREADS = 1


def _thread_default(settings: Settings) -> Settings:
    if settings.num_threads is not None:
        return settings
    os.environ["TEXTCLF_NUM_THREADS"] = str(DEFAULT_TORCH_THREADS)  # workers read it again
    return settings.model_copy(update={"num_threads": DEFAULT_TORCH_THREADS})


def serve(settings: Settings, device: torch.device) -> int:
    configure_logging(settings.log_level, settings.log_format)
    settings = _thread_default(settings)
    if settings.workers == 1 and settings.multiproc_dir is not None:
        # one process keeps its metrics in memory: multiprocess files need
        # PROMETHEUS_MULTIPROC_DIR before prometheus-client is imported (see _serve_workers)
        settings = settings.model_copy(update={"multiproc_dir": None})
    if settings.workers > 1:
        return _serve_workers(settings)
    from service.main import create_app

    config = uvicorn.Config(create_app(settings), **uvicorn_options(settings))
    server = Server(config)
    server.run()
    return 0 if server.started else 1


# Workers write their metrics and connection counts (service.balance) all the time. On a
# disk-backed /tmp (ext4) such a write can wait hundreds of ms for the journal, with the event
# loop stopped; tmpfs never waits for a disk (gunicorn's advice for its worker heartbeat files
# is the same: --worker-tmp-dir /dev/shm).
SHARED_MEMORY = Path("/dev/shm")


def memory_dir() -> str | None:
    """Where the workers' own metrics directory goes: /dev/shm (tmpfs) where it is there and
    writable, else the system's temporary directory (None)."""
    return str(SHARED_MEMORY) if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK) else None


# The main process holds an flock on this file in the workers' directory it made, for as long
# as it runs: a directory whose lock is free was left by a service that died without removing
# it (SIGKILL). flock, unlike a pid, also holds across the PID namespaces of containers that
# share a /dev/shm.
OWNER_FILE = ".owner"
PREFIX, STAGING_PREFIX = "textclf-metrics-", ".textclf-new-"


def own_metrics_dir(parent: str) -> tuple[str, int]:
    """A new directory under `parent` for the workers' files and the fd of its owner lock (keep
    it open). It is made under a name `remove_abandoned` ignores and renamed once locked, so a
    directory that function finds is either locked by a live service or abandoned."""
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
    fd = os.open(os.path.join(staging, OWNER_FILE), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    parent, name = os.path.split(staging)
    directory = os.path.join(parent, PREFIX + name[len(STAGING_PREFIX):])
    os.rename(staging, directory)
    return directory, fd


def remove_abandoned(parent: str) -> list[str]:
    """Remove the workers' directories under `parent` whose service is gone (lock free)."""
    removed = []
    for path in glob.glob(os.path.join(parent, PREFIX + "*")):
        try:
            fd = os.open(os.path.join(path, OWNER_FILE), os.O_RDWR)
        except OSError:  # no lock file: an older textclf's (left alone), or just removed
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except BlockingIOError:  # its service is running
            pass
        finally:
            os.close(fd)
    return removed


def _workers_dir(settings: Settings) -> tuple[str, int | None]:
    """TEXTCLF_MULTIPROC_DIR emptied, or a directory of our own (and its owner lock's fd)."""
    if settings.multiproc_dir is not None:
        directory = str(settings.multiproc_dir)
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):  # stale files from an earlier run would add up
            os.remove(os.path.join(directory, name))
        return directory, None
    parent = memory_dir() or tempfile.gettempdir()
    for path in remove_abandoned(parent):
        log.info("removed %s, left by a service that did not stop cleanly", path)
    return own_metrics_dir(parent)


def _serve_workers(settings: Settings) -> int:
    """N processes; metrics go through prometheus-client's multiprocess files, so a scrape of
    any worker reports the sum over all of them."""
    directory, owner = _workers_dir(settings)
    # Workers are new processes: they read these at import time (prometheus-client) and in
    # Settings (TEXTCLF_MULTIPROC_DIR).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    os.environ["TEXTCLF_MULTIPROC_DIR"] = str(directory)
    try:
        uvicorn.run("service.main:create_app", factory=True, workers=settings.workers,
                    **uvicorn_options(settings))
    finally:
        if owner is not None:  # ours: a directory left per start would pile up
            shutil.rmtree(directory, ignore_errors=True)
            os.close(owner)
    return 0

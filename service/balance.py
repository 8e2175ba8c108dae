"""Even out keep-alive connections between the TEXTCLF_WORKERS processes.

The workers share one listening socket and a connection stays with the worker that accepted it.
A client that opens its pool in one burst (wrk, a proxy's upstream pool) often lands almost all
of it on one worker, whichever woke first: 64 connections split 60/4, 63/1 and 64/0 in
`bench.serving`-like runs, and the worker left with a handful of connections idles its core
(64/0: 3,018 req/s; 32/32: 4,885-5,783). So each worker writes its number of open connections
to a file in the metrics directory every PUBLISH_S and reads the others'; a worker holding more
than its share answers a request with `connection: close`. The response is complete, the client
opens a new connection, and that one goes to whichever worker accepts first, usually the less
busy one. Nothing is lost: HTTP/1.1 clients reopen on `connection: close`.

The file work runs on a thread, never on the event loop: on a disk-backed directory (ext4) a
write can wait hundreds of milliseconds for the filesystem's journal, and the loop answers
nothing meanwhile (2 workers, c=64, metrics directory on ext4: p99 0.6-1.1 s in 20 s wrk runs,
each stall in this write). service.server puts the directory on tmpfs by default.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sized
from pathlib import Path

log = logging.getLogger("textclf.balance")
PUBLISH_S = 0.2
STALE_S = 1.0  # a count not rewritten for this long is a worker that is gone
PREFIX = "connections-"  # not *.db: prometheus-client's multiprocess files are those
_COUNT = struct.Struct("=q")


def share_limit(own: int, others: list[int]) -> int | None:
    """Connections one worker may hold before it sheds: its even share of all the workers'
    connections plus a tenth (at least 2) of slack, so small differences are left alone."""
    if not others:
        return None  # alone: nothing to even out
    fair = (own + sum(others)) / (len(others) + 1)
    return int(fair + max(2.0, 0.1 * fair))


class ConnectionBalance:
    """One worker's side. `attach` the server's set of open connections (uvicorn's
    server_state.connections), `start` on the event loop, ask `should_close` per request."""

    def __init__(self, directory: Path, on_close: Callable[[], object] = lambda: None,
                 pid: int | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{PREFIX}{pid or os.getpid()}"
        self.on_close = on_close  # counts it (service.metrics)
        self.connections: Sized = ()
        self.limit: int | None = None  # from the last publish; None: do not shed
        self.closing = 0  # connections told to close since the last publish, maybe still open
        self._timer: asyncio.TimerHandle | None = None
        self._fd: int | None = None  # this worker's file, written in place (no truncate)
        self._stopped = False
        self._io = threading.Lock()  # the file: an exchange on a thread against `stop`

    def attach(self, connections: Sized) -> None:
        self.connections = connections

    def start(self) -> None:
        """Publish now, on a thread, and again PUBLISH_S after each publish has ended (a slow
        filesystem delays the next publish, never a request)."""
        own, loop = len(self.connections), asyncio.get_running_loop()
        exchange = loop.run_in_executor(None, self._exchange, own)
        exchange.add_done_callback(lambda done: self._published(own, done, loop))

    def _published(self, own: int, exchange: asyncio.Future[list[int]],
                   loop: asyncio.AbstractEventLoop) -> None:
        if self._stopped or exchange.cancelled():
            return
        if (error := exchange.exception()) is not None:  # a bug: stop shedding, keep publishing
            log.error("publishing the connection count failed", exc_info=error)
        self._set_limit(own, [] if error is not None else exchange.result())
        self._timer = loop.call_later(PUBLISH_S, self.start)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._io:  # an exchange still running finishes first, and none writes after
            self._stopped = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.path.unlink(missing_ok=True)

    def publish(self) -> None:
        """Write this worker's count, read the live others', and set the limit from them, all
        on the calling thread."""
        own = len(self.connections)
        self._set_limit(own, self._exchange(own))

    def _set_limit(self, own: int, others: list[int]) -> None:
        self.limit, self.closing = share_limit(own, others), 0

    def _exchange(self, own: int) -> list[int]:
        """Write `own`; the live others' counts (none if the directory went away: stop
        shedding rather than fail requests)."""
        with self._io:
            if self._stopped:
                return []
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                os.pwrite(self._fd, _COUNT.pack(own), 0)  # in place; it also renews the mtime
                return self._others()
            except OSError:
                return []

    def _others(self) -> list[int]:
        counts, now = [], time.time()
        for entry in os.scandir(self.directory):
            if not entry.name.startswith(PREFIX) or entry.name == self.path.name:
                continue
            try:
                if now - entry.stat().st_mtime > STALE_S:
                    continue
                data = Path(entry.path).read_bytes()
            except OSError:  # removed meanwhile: a worker that stopped
                continue
            if len(data) == _COUNT.size:
                counts.append(_COUNT.unpack(data)[0])
        return counts

    def should_close(self) -> bool:
        """True when this worker holds more than its share: close the connection after this
        response (the protocol may still keep it for a pipelined request; see `closed`)."""
        if self.limit is None or len(self.connections) - self.closing <= self.limit:
            return False
        self.closing += 1
        return True

    def closed(self) -> None:
        """A response went out with `connection: close` because of `should_close`."""
        self.on_close()

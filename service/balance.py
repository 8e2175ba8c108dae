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
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable, Sized
from pathlib import Path

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

    def attach(self, connections: Sized) -> None:
        self.connections = connections

    def start(self) -> None:
        self.publish()
        self._timer = asyncio.get_running_loop().call_later(PUBLISH_S, self.start)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.path.unlink(missing_ok=True)

    def publish(self) -> None:
        """Write this worker's count, read the live others', and set the limit from them."""
        own = len(self.connections)
        try:
            self.path.write_bytes(_COUNT.pack(own))
            others = self._others()
        except OSError:  # the directory went away: stop shedding rather than fail requests
            others = []
        self.limit, self.closing = share_limit(own, others), 0

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

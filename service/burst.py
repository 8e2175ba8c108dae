"""The fast lane's responses written in one burst per event-loop iteration, not one at a time.

Why: a forward pass ends many requests at once, and their tasks each build and write a response
in turn, ~15 us of Python apart. Each write on a loopback (or any) socket wakes the client if it
sleeps, so a client with many connections (wrk, a load balancer, a batch job) woke once per
response, and on a shared machine the woken client preempted the server mid-request: 0.81-0.89
forced context switches per request, and wrk spent 26-31 us of CPU per request. Held until the
end of the iteration, the writes of all requests answered in it go out back to back and the
client wakes far less often (VM 2, 2 workers, bfloat16, c=64, 7 alternating pairs of 10 s wrk
runs: 0.48-0.51 forced switches and 17-21 us of wrk CPU per request, requests/s +6.6 % on the
median pair; see the README's Performance).
Netty's FlushConsolidationHandler does the same for its channels.

A write waits for the callbacks already scheduled on the loop (`call_soon`): the first
response of a burst waits for the others answered with it, ~15 us of Python each, and for the
reading of requests that arrive meanwhile (the loop polls its sockets between iterations); not
for a forward pass on the loop, which service.batcher starts only after the flush. Anything
that would write to or close a connection outside the burst calls `flush` first, so a
connection's bytes keep their order (service.protocol).
"""

from __future__ import annotations

import asyncio
import logging
import weakref

log = logging.getLogger("textclf.burst")


class WriteBurst:
    """Writes held for one event loop until its current iteration ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[tuple[asyncio.Transport, bytes]] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append((transport, data))

    def flush(self) -> None:
        """Write everything held, in the order it came (at once when called directly; a flush
        already scheduled then finds nothing)."""
        held, self._held = self._held, []
        for transport, data in held:
            if transport.is_closing():  # the client went away meanwhile: nobody to send to
                continue
            try:
                transport.write(data)
            except Exception:  # one broken connection must not hold back the others
                log.exception("a response could not be written")


_BURSTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBurst] = (
    weakref.WeakKeyDictionary())


def burst_for(loop: asyncio.AbstractEventLoop) -> WriteBurst:
    """The one WriteBurst of this loop (all its connections share it)."""
    burst = _BURSTS.get(loop)
    if burst is None:
        burst = _BURSTS[loop] = WriteBurst(loop)
    return burst

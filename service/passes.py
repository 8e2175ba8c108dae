"""Forward passes for the batcher: where each one runs, and an awaitable for its outputs.

Three places (`Placement`):
- the event loop itself: no hand-off at all, but nothing else runs meanwhile (short passes);
- torch's inter-op threads, through model.scripted (`Predictor.launch`; CPU, max / mean
  pooling): the pass holds no GIL, so the loop goes on parsing and answering on the other core,
  and a pass can be queued behind the running one so the model never waits for the loop;
- a Python thread (`Predictor.compute` in an executor): every other case, such as CUDA.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from service.predictor import Predictor

if TYPE_CHECKING:
    from model.scripted import Outputs
    from service.batcher import Job

# A forward pass runs on the event loop only when it should take at most this long: a longer
# one would hold up every other request's parsing, health probes and 429s (bench/overload.py:
# with every pass inline, a 429 took up to 350 ms at p99; 10 ms with the thread).
INLINE_BUDGET_S = 0.010


# In "overlap" placement a batch of at least this many texts goes off the loop: the hand-off
# costs ~0.25 ms of latency, which pays only when the loop has other requests to serve meanwhile,
# and concurrent requests are what make batches bigger than a few texts.
OVERLAP_MIN_TEXTS = 8


class Placement:
    """Where forward passes run: "thread" (off the loop), "loop", "auto" or "overlap".

    "auto": on the loop when the batch's padded size (texts x longest) times the measured
    seconds per padded token fits INLINE_BUDGET_S, else off it; until a first pass is measured,
    off it. "overlap" (a CPU scripted pass with a core to spare, see service.state): as "auto",
    and batches of OVERLAP_MIN_TEXTS or more off the loop too."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seconds_per_token: float | None = None  # running average over recent passes

    def inline(self, encoded: list[list[int]]) -> bool:
        if self.mode in ("thread", "loop"):
            return self.mode == "loop"
        if self.seconds_per_token is None:
            return False
        if self.mode == "overlap" and len(encoded) >= OVERLAP_MIN_TEXTS:
            return False
        return _padded_tokens(encoded) * self.seconds_per_token <= INLINE_BUDGET_S

    def observe(self, encoded: list[list[int]], seconds: float) -> None:
        per_token = seconds / _padded_tokens(encoded)
        last = self.seconds_per_token
        self.seconds_per_token = per_token if last is None else 0.8 * last + 0.2 * per_token


def _padded_tokens(encoded: list[list[int]]) -> int:
    return max(1, len(encoded) * max((len(e) for e in encoded), default=1))


@dataclass
class Pass:
    """One forward pass, started: `outputs` resolves on the event loop."""

    jobs: list[Job]
    encoded: list[list[int]]
    started: float
    outputs: asyncio.Future[Outputs]
    scripted: torch.futures.Future | None = None  # set when it runs through model.scripted


def start_pass(predictor: Predictor, placement: Placement, executor: Executor | None,
               jobs: list[Job], after: Pass | None = None) -> Pass:
    """Start the pass for `jobs`; `after`: a running pass this one may queue behind (it is
    never run inline then, which would stop the loop until both are done). A failure to start
    comes back through `outputs`, like a failure of the pass."""
    encoded = [e for job in jobs for e in job.encoded]
    started, loop = time.perf_counter(), asyncio.get_running_loop()
    outputs: asyncio.Future[Outputs] = loop.create_future()
    scripted = None
    try:
        batch = predictor.pad_batch(encoded)
        if after is None and placement.inline(encoded):  # always so in "loop" mode
            outputs.set_result(predictor.compute(batch))
        else:
            scripted = predictor.launch(batch, after.scripted if after is not None else None)
            if scripted is None:
                assert executor is not None, "a pass that cannot run inline needs the thread"
                _resolve_from(executor.submit(predictor.compute, batch), outputs, loop)
            else:
                _resolve_from(scripted, outputs, loop)
    except Exception as exc:  # noqa: BLE001 - handed to every waiting request
        outputs.set_exception(exc)
    return Pass(jobs, encoded, started, outputs, scripted)


def _resolve_from(source: torch.futures.Future | concurrent.futures.Future,
                  outputs: asyncio.Future[Outputs], loop: asyncio.AbstractEventLoop) -> None:
    """Complete `outputs` on the loop when `source` (done on another thread) is."""

    def resolve() -> None:
        if outputs.done():  # cancelled
            return
        try:
            outputs.set_result(source.result() if isinstance(source, concurrent.futures.Future)
                               else source.value())
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            outputs.set_exception(exc)

    def done(_: object) -> None:  # on the thread that finished: it takes the GIL for this only
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    source.add_done_callback(done)

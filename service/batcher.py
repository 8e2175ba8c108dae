"""Micro-batching: concurrent requests share one forward pass.

One asyncio task takes every queued job (up to `max_batch_size` texts) and runs the forward
pass, on a dedicated inference thread or on the event loop itself (`Placement`: on the CPU one
core is busy either way, and inline there is no thread hand-off, so short passes run inline).
While it runs, new requests pile up (in the socket buffers when inline) and form the next
batch, so under load batches fill by themselves. The task waits up to `max_delay_s` for more
only while requests are known to be on their way (`arriving`): a lone request never waits.
The queue is bounded in texts; a full queue answers at once with `overloaded` (429).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from service.errors import ErrorType, ServiceError, overloaded
from service.metrics import Metrics
from service.predictor import BatchOutput, Predictor

# A forward pass runs on the event loop only when it should take at most this long: a longer
# one would hold up every other request's parsing, health probes and 429s (bench/overload.py:
# with every pass inline, a 429 took up to 350 ms at p99; 10 ms with the thread).
INLINE_BUDGET_S = 0.010


class Placement:
    """Where forward passes run: "thread", "loop", or "auto": on the loop when the batch's padded
    size (texts x longest) times the measured seconds per padded token fits INLINE_BUDGET_S,
    else on the thread. Until a first pass is measured, the thread."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seconds_per_token: float | None = None  # running average over recent passes

    def inline(self, encoded: list[list[int]]) -> bool:
        if self.mode != "auto":
            return self.mode == "loop"
        if self.seconds_per_token is None:
            return False
        return _padded_tokens(encoded) * self.seconds_per_token <= INLINE_BUDGET_S

    def observe(self, encoded: list[list[int]], seconds: float) -> None:
        per_token = seconds / _padded_tokens(encoded)
        last = self.seconds_per_token
        self.seconds_per_token = per_token if last is None else 0.8 * last + 0.2 * per_token


def _padded_tokens(encoded: list[list[int]]) -> int:
    return max(1, len(encoded) * max((len(e) for e in encoded), default=1))


@dataclass
class Job:
    encoded: list[list[int]]
    future: asyncio.Future[JobResult]
    enqueued_at: float


@dataclass
class JobResult:
    output: BatchOutput     # rows for this job's texts only
    queue_seconds: float
    inference_seconds: float
    batch_size: int


class Batcher:
    def __init__(self, predictor: Predictor, metrics: Metrics, max_batch_size: int,
                 max_delay_s: float, max_queue_size: int, placement: str = "thread") -> None:
        self.predictor, self.metrics = predictor, metrics
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.max_queue_size = max_queue_size
        self._jobs: deque[Job] = deque()
        self._queued_texts = 0
        self.arriving = 0  # requests parsed but not yet submitted (see module docstring)
        self._wakeup = asyncio.Event()
        self.placement = Placement(placement)
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix="textclf-inference")
                          if placement != "loop" else None)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        # On the event loop thread too (it runs the small torch work of /embed): OpenMP and MKL
        # keep the setting per thread, and a thread that ran torch before it was set keeps
        # torch's default, which on a busy machine made small ops 10-40x slower (spinning).
        torch.set_num_threads(self.predictor.num_threads)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="textclf-batcher")

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    async def submit(self, encoded: list[list[int]]) -> JobResult:
        if self._closing:
            raise ServiceError(ErrorType.unhealthy, "the model is shutting down")
        if self._queued_texts + len(encoded) > self.max_queue_size:
            raise overloaded()
        job = Job(encoded, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._jobs.append(job)
        self._queued_texts += len(encoded)
        self.metrics.queued.set(self._queued_texts)
        self._wakeup.set()
        return await job.future

    def check_room(self) -> None:
        """429 before a request is read and tokenized when no text of it could be queued: under
        overload the refusal then costs next to nothing (`submit` checks the exact size)."""
        if self._queued_texts >= self.max_queue_size:
            raise overloaded()

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark a request as on its way to `submit` (reading body, tokenizing)."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def _take_batch(self) -> list[Job]:
        batch: list[Job] = []
        texts = 0
        while self._jobs and (not batch or texts + len(self._jobs[0].encoded) <= self.max_batch_size):
            job = self._jobs.popleft()
            batch.append(job)
            texts += len(job.encoded)
        self._queued_texts -= texts
        self.metrics.queued.set(self._queued_texts)
        return batch

    async def _wait_for_more(self) -> None:
        deadline = time.perf_counter() + self.max_delay_s
        while (self.arriving > 0 and self._queued_texts < self.max_batch_size
               and (left := deadline - time.perf_counter()) > 0):
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break

    async def _forward(self, encoded: list[list[int]]) -> BatchOutput:
        if self.placement.inline(encoded):  # always so in "loop" mode, which has no executor
            return self.predictor.run_batch(encoded)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predictor.run_batch, encoded)

    async def _run(self) -> None:
        while not (self._closing and not self._jobs):
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await asyncio.sleep(0)  # let handlers that are ready to submit do so first
            if self.max_delay_s > 0:
                await self._wait_for_more()
            batch = self._take_batch()
            started = time.perf_counter()
            encoded = [e for job in batch for e in job.encoded]
            try:
                output = await self._forward(encoded)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - started
            self.placement.observe(encoded, seconds)
            self._deliver(batch, output, started, seconds)

    def _deliver(self, batch: list[Job], output: BatchOutput, started: float,
                 inference_seconds: float) -> None:
        size = sum(len(job.encoded) for job in batch)
        self.metrics.batch_texts.observe(size)
        self.metrics.inference.observe(inference_seconds)
        row = 0
        for job in batch:
            n = len(job.encoded)
            part = BatchOutput(output.probabilities[row : row + n], output.logits[row : row + n],
                               output.features[row : row + n])
            row += n
            queue_seconds = started - job.enqueued_at
            self.metrics.queue_wait.observe(queue_seconds)
            if not job.future.done():  # the client may have gone away
                job.future.set_result(JobResult(part, queue_seconds, inference_seconds, size))

    async def close(self, timeout_s: float) -> None:
        """Refuse new work, finish what is queued (at most `timeout_s`), stop the thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
        while self._jobs:  # only left after a timeout: fail them rather than hang
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(ServiceError(ErrorType.unhealthy, "shut down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

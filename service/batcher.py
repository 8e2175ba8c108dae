"""Micro-batching: concurrent requests share one forward pass.

One asyncio task takes every queued job (up to `max_batch_size` texts) and runs the forward
pass (where: service.passes). While it runs, new requests pile up (in the socket buffers when
inline) and form the next batch, so under load batches fill by themselves; a batch that fills
while a scripted pass runs is queued behind it at once. The task waits up to `max_delay_s` for more
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
from itertools import islice
from typing import Any, Protocol

import torch

from service.errors import ErrorType, ServiceError, overloaded
from service.metrics import Metrics
from service.passes import Pass, Placement, start_pass
from service.predictor import BatchOutput, Predictor


class Receiver(Protocol):
    """Who gets a job's result: an asyncio.Future (`Batcher.submit`), or a callback object
    (service.direct answers its request from `set_result` itself, without a task)."""

    def done(self) -> bool: ...

    def set_result(self, result: JobResult, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass
class Job:
    encoded: list[list[int]]
    receiver: Receiver
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
        self._full: asyncio.Future[None] | None = None  # set when a full batch is queued
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
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self.enqueue(encoded, future)
        return await future

    def takes(self, texts: int) -> bool:
        """Whether `enqueue` would take this many texts now (it raises where this is False)."""
        return not self._closing and self._queued_texts + texts <= self.max_queue_size

    def enqueue(self, encoded: list[list[int]], receiver: Receiver) -> None:
        """Queue texts; `receiver` gets their JobResult (or the pass's exception) on the loop."""
        if self._closing:
            raise ServiceError(ErrorType.unhealthy, "the model is shutting down")
        if self._queued_texts + len(encoded) > self.max_queue_size:
            raise overloaded()
        job = Job(encoded, receiver, time.perf_counter())
        self._jobs.append(job)
        self._queued_texts += len(encoded)
        self.metrics.queued.set(self._queued_texts)
        self._wakeup.set()
        if self._queued_texts >= self.max_batch_size and self._full and not self._full.done():
            self._full.set_result(None)

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

    def _next_batch_jobs(self) -> int:
        """How many queued jobs the next batch takes: whole jobs up to `max_batch_size` texts,
        and at least one (a job is never split)."""
        jobs = texts = 0
        for job in self._jobs:
            if jobs and texts + len(job.encoded) > self.max_batch_size:
                break
            jobs, texts = jobs + 1, texts + len(job.encoded)
        return jobs

    def _take_batch(self) -> list[Job]:
        batch = [self._jobs.popleft() for _ in range(self._next_batch_jobs())]
        self._queued_texts -= sum(len(job.encoded) for job in batch)
        self.metrics.queued.set(self._queued_texts)
        return batch

    def _next_texts(self) -> list[list[int]]:
        """The texts `_take_batch` would take now."""
        return [e for job in islice(self._jobs, self._next_batch_jobs()) for e in job.encoded]

    async def _wait_for_more(self) -> None:
        deadline = time.perf_counter() + self.max_delay_s
        while (self.arriving > 0 and self._queued_texts < self.max_batch_size
               and (left := deadline - time.perf_counter()) > 0):
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break

    def _start(self, jobs: list[Job], after: Pass | None = None) -> Pass:
        return start_pass(self.predictor, self.placement, self._executor, jobs, after)

    async def _run(self) -> None:
        current: Pass | None = None
        while not (self._closing and not self._jobs and current is None):
            if current is None:
                if not self._jobs:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                # twice: handlers that are ready submit first; and the responses of the pass
                # that just ended, written by their handlers in the first of these iterations
                # and held to its end (service.burst), go out before this pass runs
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if self.max_delay_s > 0:
                    await self._wait_for_more()
                current = self._start(self._take_batch())
            following = await self._queue_behind(current)
            ended = await self._finish(current)
            if following is not None:  # it began when `current` ended, not when queued
                following.started = max(following.started, ended)
            current = following

    async def _queue_behind(self, current: Pass) -> Pass | None:
        """While a scripted pass runs, start the next batch as soon as it is full, queued
        behind it in torch: the model then goes on while the loop answers `current`. Not a
        batch that Placement puts on the loop ("auto" sends only long passes off it)."""
        if current.scripted is None:
            return None
        while not current.outputs.done():
            if self._queued_texts >= self.max_batch_size:
                if self.placement.inline(self._next_texts()):
                    return None
                return self._start(self._take_batch(), after=current)
            self._full = asyncio.get_running_loop().create_future()
            either: list[asyncio.Future[Any]] = [current.outputs, self._full]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            self._full = None
        return None

    async def _finish(self, current: Pass) -> float:
        """Wait for a pass and hand its rows to the jobs; returns when it ended."""
        try:
            output = self.predictor.finish(await current.outputs)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for job in current.jobs:
                if not job.receiver.done():
                    job.receiver.set_exception(exc)
            return time.perf_counter()
        ended = time.perf_counter()
        seconds = ended - current.started
        self.placement.observe(current.encoded, seconds)
        self._deliver(current.jobs, output, current.started, seconds)
        return ended

    def _deliver(self, batch: list[Job], output: BatchOutput, started: float,
                 inference_seconds: float) -> None:
        size = sum(len(job.encoded) for job in batch)
        self.metrics.batch_texts.observe(size)
        self.metrics.inference.observe(inference_seconds)
        row = 0
        for job in batch:
            n = len(job.encoded)
            part = BatchOutput(output.probabilities[row : row + n], output.logits[row : row + n],
                               output.pass_features, slice(row, row + n))
            row += n
            queue_seconds = started - job.enqueued_at
            self.metrics.queue_wait.observe(queue_seconds)
            if not job.receiver.done():  # the client may have gone away
                job.receiver.set_result(JobResult(part, queue_seconds, inference_seconds, size))

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
            if not job.receiver.done():
                job.receiver.set_exception(ServiceError(ErrorType.unhealthy, "shut down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

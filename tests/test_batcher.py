"""service/batcher.py: passes run where service.passes puts them, a batch that fills while a
scripted pass runs is queued behind it at once, and the responses of a pass go out before the
next pass runs on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from prometheus_client import CollectorRegistry

from service.batcher import Batcher
from service.metrics import Metrics
from service.passes import INLINE_BUDGET_S
from service.predictor import Predictor

SHORT = [[5] * 10] * 4  # 40 padded tokens
LONG = [[5] * 200] * 32  # 6,400 padded tokens


def batcher_for(predictor: Predictor, placement: str, max_batch_size: int = 32) -> Batcher:
    return Batcher(predictor, Metrics(CollectorRegistry()), max_batch_size=max_batch_size,
                   max_delay_s=0.0, max_queue_size=1024, placement=placement)


@pytest.mark.anyio
async def test_short_passes_run_on_the_event_loop_long_ones_off_it(toy_artifact):
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    where: list[str] = []
    compute, launch = predictor.compute, predictor.launch
    predictor.compute = lambda batch: where.append(threading.current_thread().name) or compute(batch)  # type: ignore[method-assign]
    predictor.launch = lambda batch, after=None: where.append("launch") or launch(batch, after)  # type: ignore[method-assign]
    batcher = batcher_for(predictor, "auto")
    batcher.start()
    try:
        batcher.placement.seconds_per_token = INLINE_BUDGET_S / 1000  # as if measured
        short = await batcher.submit(SHORT)
        batcher.placement.seconds_per_token = INLINE_BUDGET_S / 1000  # keep the estimate fixed
        long = await batcher.submit(LONG)
    finally:
        await batcher.close(5)
    assert where == [threading.current_thread().name, "launch"]
    assert short.output.logits == predictor.run_batch(SHORT).logits
    assert long.output.logits == predictor.run_batch(LONG).logits


@pytest.mark.anyio
async def test_a_batch_that_fills_during_a_scripted_pass_is_queued_behind_it(toy_artifact):
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    held = torch.futures.Future()  # the first pass: it ends when the test says so
    afters: list[object] = []
    first_batch = []
    launch = predictor.launch

    def launching(batch, after=None):
        afters.append(after)
        if len(afters) == 1:
            first_batch.append(batch)
            return held
        return launch(batch)

    predictor.launch = launching  # type: ignore[method-assign]
    batcher = batcher_for(predictor, "thread", max_batch_size=4)
    batcher.start()
    texts = [[3, 4, 5], [6, 7, 8], [5, 5, 5], [9, 8, 7], [4, 4, 4]]
    try:
        first = asyncio.create_task(batcher.submit(texts[:1]))
        while not afters:
            await asyncio.sleep(0)
        rest = [asyncio.create_task(batcher.submit([text])) for text in texts[1:]]  # 4: full
        while len(afters) < 2:
            await asyncio.sleep(0.001)
        assert afters == [None, held]  # started while the first was still running
        await asyncio.sleep(0.1)
        held.set_result(predictor.compute(first_batch[0]))
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    finally:
        await batcher.close(5)
    got = [r.output.logits[0] for r in results]
    assert got == predictor.run_batch(texts[:1]).logits + predictor.run_batch(texts[1:]).logits
    assert [r.batch_size for r in results] == [1, 4, 4, 4, 4]
    # the second batch's wait behind the first counts as queueing, not as inference
    assert results[1].queue_seconds >= 0.1 > results[1].inference_seconds


@pytest.mark.anyio
async def test_in_auto_mode_a_batch_for_the_loop_is_not_queued_behind(toy_artifact):
    """"auto" sends only long passes off the loop: a short batch that fills meanwhile waits and
    then runs on the loop, as it would have anyway."""
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    held = torch.futures.Future()
    afters: list[object] = []
    held_batch, where = [], []
    compute = predictor.compute

    def launching(batch, after=None):
        afters.append(after)
        held_batch.append(batch)
        return held

    predictor.launch = launching  # type: ignore[method-assign]
    predictor.compute = lambda batch: where.append(threading.current_thread().name) or compute(batch)  # type: ignore[method-assign]
    batcher = batcher_for(predictor, "auto", max_batch_size=4)
    batcher.start()
    batcher.placement.seconds_per_token = INLINE_BUDGET_S / 1000  # 1,000 padded tokens inline
    try:
        long = asyncio.create_task(batcher.submit([[5] * 200] * 8))  # 1,600: off the loop
        while not afters:
            await asyncio.sleep(0)
        short = [asyncio.create_task(batcher.submit([[3, 4, 5]])) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert afters == [None] and where == []  # not queued behind the long pass
        held.set_result(compute(held_batch[0]))
        await asyncio.wait_for(asyncio.gather(long, *short), 5)
    finally:
        await batcher.close(5)
    assert where == [threading.current_thread().name]  # then on the loop, all four together


@pytest.mark.anyio
async def test_responses_of_a_pass_go_out_before_the_next_pass_runs_on_the_loop(toy_artifact):
    """A handler answered by a pass writes its response, which service.burst holds to the end
    of that loop iteration (`call_soon`); a pass already queued runs on the loop only after."""
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    events: list[str] = []
    compute = predictor.compute
    predictor.compute = lambda batch: events.append("pass") or compute(batch)  # type: ignore[method-assign]
    batcher = batcher_for(predictor, "loop", max_batch_size=len(SHORT))  # one job per pass
    loop = asyncio.get_running_loop()

    async def handler(name: str) -> None:
        await batcher.submit(SHORT)
        events.append(f"answered {name}")
        loop.call_soon(events.append, f"written {name}")  # as WriteBurst.write schedules it

    batcher.start()
    try:
        await asyncio.gather(handler("a"), handler("b"))
    finally:
        await batcher.close(5)
    assert events == ["pass", "answered a", "written a", "pass", "answered b", "written b"]

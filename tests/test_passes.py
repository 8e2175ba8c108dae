"""service/passes.py: where forward passes run (Placement), and that each place gives the
predictor's own answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from service.passes import INLINE_BUDGET_S, OVERLAP_MIN_TEXTS, Placement, start_pass
from service.predictor import Predictor

SHORT = [[5] * 10] * 4  # 40 padded tokens
LONG = [[5] * 200] * 32  # 6,400 padded tokens


def test_auto_starts_on_the_thread_then_follows_the_measured_cost():
    placement = Placement("auto")
    assert not placement.inline(SHORT)  # nothing measured yet: the thread is always safe
    per_token = INLINE_BUDGET_S / 1000  # 1,000 padded tokens fit the budget
    placement.observe(SHORT, 40 * per_token)
    assert placement.inline(SHORT) and not placement.inline(LONG)
    placement.observe(LONG, 6400 * per_token * 10)  # passes got slower: the average follows
    assert placement.seconds_per_token == pytest.approx(per_token * (0.8 + 0.2 * 10))


def test_overlap_also_sends_many_texts_off_the_loop():
    placement = Placement("overlap")
    assert not placement.inline(SHORT)  # nothing measured yet
    placement.observe(SHORT, 1e-9)  # cheap: everything fits the budget
    few, many = [[5] * 10] * (OVERLAP_MIN_TEXTS - 1), [[5] * 10] * OVERLAP_MIN_TEXTS
    assert placement.inline(few) and not placement.inline(many)


@pytest.mark.parametrize(("mode", "short", "long"), [("thread", False, False),
                                                     ("loop", True, True)])
def test_fixed_modes_ignore_the_cost(mode, short, long):
    placement = Placement(mode)
    placement.observe(SHORT, 1e-9)
    assert (placement.inline(SHORT), placement.inline(LONG)) == (short, long)


class Job:  # what start_pass reads of service.batcher.Job
    def __init__(self, encoded: list[list[int]]) -> None:
        self.encoded = encoded


def texts(predictor: Predictor) -> list[list[int]]:
    return [predictor.encode(t) for t in ("the team won the cup final", "shares fell",
                                          "the new phone has a faster chip")]


def want(predictor: Predictor, encoded: list[list[int]]) -> list[list[float]]:
    return predictor.run_batch(encoded).logits


@pytest.mark.anyio
async def test_each_place_gives_the_predictors_answer(toy_artifact):
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    encoded = texts(predictor)
    executor = ThreadPoolExecutor(1, thread_name_prefix="textclf-inference")
    try:
        inline = start_pass(predictor, Placement("loop"), None, [Job(encoded)])
        assert inline.outputs.done() and inline.scripted is None  # computed before it returned
        similar = [encoded[0], encoded[2]]  # 6 and 7 tokens: little padding, so scripted
        scripted = start_pass(predictor, Placement("thread"), executor, [Job(encoded[:1]), Job(encoded[1:])])
        assert scripted.scripted is not None and scripted.encoded == encoded
        behind = start_pass(predictor, Placement("loop"), executor, [Job(similar)], after=scripted)
        assert behind.scripted is not None  # queued after a running pass: never inline
        for started, rows in ((inline, encoded), (scripted, encoded), (behind, similar)):
            assert predictor.finish(await started.outputs).logits == want(predictor, rows)
    finally:
        executor.shutdown()


@pytest.mark.anyio
async def test_what_cannot_be_scripted_goes_to_the_python_thread(toy_artifact):
    predictor = Predictor(toy_artifact, torch.device("cpu"))
    encoded = texts(predictor)
    threads = []
    compute = predictor.compute

    def recording(batch):
        threads.append(threading.current_thread().name)
        return compute(batch)

    predictor.compute = recording  # type: ignore[method-assign]
    predictor.scripted = None  # as on CUDA or with `last` pooling
    executor = ThreadPoolExecutor(1, thread_name_prefix="textclf-inference")
    try:
        started = start_pass(predictor, Placement("thread"), executor, [Job(encoded)])
        assert started.scripted is None
        assert predictor.finish(await started.outputs).logits == want(predictor, encoded)
    finally:
        executor.shutdown()
    assert threads[0] == "textclf-inference_0"  # (then `want` computed on this thread)


@pytest.mark.anyio
async def test_a_failure_to_start_comes_back_as_the_pass_result(toy_artifact):
    predictor = Predictor(toy_artifact, torch.device("cpu"))

    def broken(_encoded):
        raise RuntimeError("padding failed")

    predictor.pad_batch = broken  # type: ignore[method-assign]
    started = start_pass(predictor, Placement("thread"), None, [Job([[5, 6]])])
    with pytest.raises(RuntimeError, match="padding failed"):
        await asyncio.wait_for(started.outputs, 1)

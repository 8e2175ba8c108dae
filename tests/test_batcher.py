"""service/batcher.py: where forward passes run (Placement), and that both places give answers."""

from __future__ import annotations

import threading

import pytest
import torch
from prometheus_client import CollectorRegistry

from service.batcher import INLINE_BUDGET_S, Batcher, Placement
from service.metrics import Metrics
from service.predictor import BatchOutput

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


@pytest.mark.parametrize(("mode", "short", "long"), [("thread", False, False),
                                                     ("loop", True, True)])
def test_fixed_modes_ignore_the_cost(mode, short, long):
    placement = Placement(mode)
    placement.observe(SHORT, 1e-9)
    assert (placement.inline(SHORT), placement.inline(LONG)) == (short, long)


class RecordingPredictor:
    """Answers every text with fixed probabilities and records which thread ran each pass."""

    num_threads = 1

    def __init__(self) -> None:
        self.threads: list[str] = []

    def run_batch(self, encoded):
        self.threads.append(threading.current_thread().name)
        n = len(encoded)
        return BatchOutput([[0.25, 0.75]] * n, [[0.0, 1.0]] * n, torch.zeros(n, 2))


@pytest.mark.anyio
async def test_short_passes_run_on_the_event_loop_long_ones_on_the_thread():
    predictor = RecordingPredictor()
    batcher = Batcher(predictor, Metrics(CollectorRegistry()), max_batch_size=32,  # type: ignore[arg-type]
                      max_delay_s=0.0, max_queue_size=1024, placement="auto")
    batcher.start()
    batcher.placement.seconds_per_token = INLINE_BUDGET_S / 1000  # as if measured
    try:
        short = await batcher.submit(SHORT)
        batcher.placement.seconds_per_token = INLINE_BUDGET_S / 1000  # keep the estimate fixed
        long = await batcher.submit(LONG)
    finally:
        await batcher.close(5)
    loop_thread = threading.current_thread().name
    assert predictor.threads[0] == loop_thread
    assert predictor.threads[1].startswith("textclf-inference")
    assert short.output.probabilities == [[0.25, 0.75]] * 4
    assert long.output.probabilities == [[0.25, 0.75]] * 32

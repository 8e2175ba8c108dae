"""Buffered metric writes give what direct prometheus-client writes give, and reach the registry
at the next event-loop iteration or at any read of it, whichever comes first."""

from __future__ import annotations

import asyncio
import math
import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.metricbuffer import PendingCounter, PendingGauge, PendingHistogram
from service.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, RATIO_BUCKETS, Metrics


def samples(metric: Histogram | Counter | Gauge) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metric.collect() for s in family.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, BATCH_BUCKETS, RATIO_BUCKETS])
def test_a_flushed_histogram_equals_one_observe_per_value(buckets: tuple[float, ...]) -> None:
    rng = random.Random(0)
    values = [rng.choice(buckets) for _ in range(50)]  # exactly on the bounds: le is inclusive
    values += [rng.uniform(-1.0, 2 * max(buckets)) for _ in range(200)]  # below, between, +Inf
    values += [0.0, -0.0, float("inf"), min(buckets) / 2]
    direct = Histogram("direct", "d", buckets=buckets, registry=None)
    buffered = Histogram("direct", "d", buckets=buckets, registry=None)
    pending = PendingHistogram(buffered)
    for value in values:
        direct.observe(value)
        pending.observe(value)
    assert samples(buffered)[("direct_count", ())] == 0  # nothing written before the flush
    pending.flush()
    pending.flush()  # a second flush adds nothing
    want, got = samples(direct), samples(buffered)
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert got[key] == value if not key[0].endswith("_sum") else math.isclose(got[key], value)


def test_nan_counts_in_no_bucket_as_with_observe() -> None:
    direct, buffered = (Histogram(n, "h", buckets=(1.0,), registry=None) for n in ("a", "b"))
    pending = PendingHistogram(buffered)
    direct.observe(float("nan"))
    pending.observe(float("nan"))
    pending.flush()
    assert [s.value for s in direct.collect()[0].samples if s.name.endswith("_count")] == \
        [s.value for s in buffered.collect()[0].samples if s.name.endswith("_count")] == [0.0]


def test_counter_and_gauge() -> None:
    counter, gauge = Counter("c", "c", registry=None), Gauge("g", "g", registry=None)
    ticks, level = PendingCounter(counter), PendingGauge(gauge)
    gauge.set(7)
    level.flush()  # never set: the gauge keeps its value
    for _ in range(5):
        ticks.inc()
    level.set(3)
    level.set(2)
    ticks.flush()
    level.flush()
    ticks.flush()
    assert samples(counter)[("c_total", ())] == 5
    assert samples(gauge)[("g", ())] == 2  # the last value set


def test_increments_from_threads_during_flushes_are_all_counted() -> None:
    counter = Counter("c", "c", registry=None)
    ticks = PendingCounter(counter)

    def hammer() -> None:
        for _ in range(20_000):
            ticks.inc()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        ticks.flush()
    ticks.flush()
    assert samples(counter)[("c_total", ())] == 80_000


def _predict_count(metrics: Metrics) -> float:
    """The counter's own value, read without the registry (which would flush first)."""
    return samples(metrics._requests_total).get(
        ("textclf_requests_total", (("endpoint", "/predict"), ("status", "200"))), 0.0)


def test_writes_land_at_the_next_loop_iteration_once_per_iteration() -> None:
    metrics = Metrics(CollectorRegistry())

    async def scenario() -> tuple[float, float]:
        for _ in range(3):
            metrics.count_request("/predict", 200, 0.004)
        before = _predict_count(metrics)
        await asyncio.sleep(0)
        return before, _predict_count(metrics)

    assert asyncio.run(scenario()) == (0, 3)


def test_reading_the_registry_flushes_first() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    async def scenario() -> float | None:
        metrics.count_request("/predict", 200, 0.004)
        metrics.count_prediction("sport", 0.9)
        return registry.get_sample_value("textclf_predictions_total", {"label": "sport"})

    assert asyncio.run(scenario()) == 1  # same iteration, but read through the registry
    assert registry.get_sample_value(
        "textclf_request_duration_seconds_bucket", {"endpoint": "/predict", "le": "0.004"}) == 1
    assert b'textclf_requests_total{endpoint="/predict",status="200"} 1.0' in metrics.render()


def test_without_a_running_loop_writes_are_immediate() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.count_request("/predict", 200, 0.004)  # e.g. a worker thread: no loop to wait for
    assert _predict_count(metrics) == 1


def test_a_flush_left_pending_on_a_closed_loop_does_not_block_the_next() -> None:
    metrics = Metrics(CollectorRegistry())
    loop = asyncio.new_event_loop()
    loop.call_soon(metrics.count_request, "/predict", 200, 0.004)  # schedules a flush...
    loop.call_soon(loop.stop)  # ...that this loop never gets to run
    loop.run_forever()
    loop.close()
    assert _predict_count(metrics) == 0

    async def count_and_yield() -> None:
        metrics.count_request("/predict", 200, 0.004)
        await asyncio.sleep(0)

    asyncio.run(count_and_yield())
    assert _predict_count(metrics) == 2

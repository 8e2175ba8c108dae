"""Every Prometheus metric of the service, on a registry passed in (no global state).

Label sets are small and fixed: `endpoint` is a route path from ENDPOINTS (anything else is
"other"), `status` an HTTP status code, `label` one of the model's labels. Request text never
becomes a label value.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.metricbuffer import FlushOnCollect, PendingCounter, PendingGauge, PendingHistogram

ENDPOINTS = frozenset({
    "/predict", "/embed", "/tokenize", "/explain", "/info", "/health", "/health/live",
    "/health/ready", "/metrics", "/admin/reload", "/docs", "/openapi.json",
})
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                   0.512, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
RATIO_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry, multiprocess_dir: str | None = None) -> None:
        """With `multiprocess_dir` (TEXTCLF_WORKERS > 1) values live in files there and a scrape
        aggregates every worker; otherwise they live in `registry`."""
        self.registry = registry
        self.multiprocess_dir = multiprocess_dir
        # per-request writes are buffered (service/metricbuffer.py); registered before every
        # metric, so any read of the registry flushes first
        registry.register(FlushOnCollect(self.flush))
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._flush_lock = threading.Lock()
        r = registry if multiprocess_dir is None else None
        self._buffer_requests(r)
        self._buffer_batches(r)
        # rare writes, made directly
        self.model_info = Gauge("textclf_model_info", "The model being served (value 1)",
                                ["version", "device", "dtype"], multiprocess_mode="liveall",
                                registry=r)
        self.ready = Gauge("textclf_ready", "1 when the model is loaded and warmed up",
                           multiprocess_mode="livemin", registry=r)
        self.reloads = Counter("textclf_model_reloads", "Model reload attempts by result",
                               ["result"], registry=r)
        self.rebalanced = Counter(
            "textclf_connections_rebalanced", "Keep-alive connections closed after a complete "
            "response because their worker held more than its share (service/balance.py)",
            registry=r)
        self._model_labels: tuple[str, str, str] | None = None
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
        else:
            MultiProcessCollector(registry, path=multiprocess_dir)

    def set_model(self, version: str, device: str, dtype: str) -> None:
        labels = (version, device, dtype)
        if self.multiprocess_dir is None:
            self.model_info.clear()
        elif self._model_labels not in (None, labels):
            # clear() is not implemented in multiprocess mode: zero the previous model instead
            self.model_info.labels(*self._model_labels).set(0)
        self._model_labels = labels
        self.model_info.labels(*labels).set(1)

    # What every request or batch writes goes through buffers (service/metricbuffer.py). The
    # prometheus objects behind them are kept only where children are made per label value, so
    # nothing writes around a buffer.

    def _buffer_requests(self, r: CollectorRegistry | None) -> None:
        self._pending: list[PendingCounter | PendingHistogram | PendingGauge] = []
        self._requests_total = Counter("textclf_requests", "HTTP requests by endpoint and status "
                                       "code", ["endpoint", "status"], registry=r)
        self._request_seconds = Histogram(
            "textclf_request_duration_seconds", "Whole-request latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r)
        self._requests: dict[tuple[str, int], tuple[PendingCounter, PendingHistogram]] = {}
        self.tokenization = self._pending_histogram(Histogram(
            "textclf_tokenization_duration_seconds", "Time to tokenize one request's inputs",
            buckets=LATENCY_BUCKETS, registry=r))
        self._input_tokens = self._pending_histogram(Histogram(
            "textclf_input_tokens", "Tokens per input text", buckets=TOKEN_BUCKETS, registry=r))
        self._oov_ratio = self._pending_histogram(Histogram(
            "textclf_oov_ratio", "Share of a text's tokens not in the vocabulary",
            buckets=RATIO_BUCKETS, registry=r))

    def _buffer_batches(self, r: CollectorRegistry | None) -> None:
        self.queue_wait = self._pending_histogram(Histogram(
            "textclf_queue_duration_seconds", "Time a request waits for its batch to start",
            buckets=LATENCY_BUCKETS, registry=r))
        self.inference = self._pending_histogram(Histogram(
            "textclf_inference_duration_seconds", "Forward pass time of one batch",
            buckets=LATENCY_BUCKETS, registry=r))
        self.batch_texts = self._pending_histogram(Histogram(
            "textclf_batch_size", "Texts per forward pass", buckets=BATCH_BUCKETS, registry=r))
        self._confidence = self._pending_histogram(Histogram(
            "textclf_prediction_confidence", "Probability of the top label",
            buckets=CONFIDENCE_BUCKETS, registry=r))
        self._predictions_total = Counter("textclf_predictions", "Texts classified, by top label",
                                          ["label"], registry=r)
        self._predicted: dict[str, PendingCounter] = {}
        self.queued = PendingGauge(Gauge("textclf_queue_depth", "Texts waiting for a batch",
                                         multiprocess_mode="livesum", registry=r))
        self._pending.append(self.queued)

    def _pending_histogram(self, child: Histogram) -> PendingHistogram:
        self._pending.append(pending := PendingHistogram(child))
        return pending

    def _pending_counter(self, child: Counter) -> PendingCounter:
        self._pending.append(pending := PendingCounter(child))
        return pending

    def count_request(self, endpoint: str, status: int, seconds: float) -> None:
        """The last write of every HTTP request: also schedules the flush."""
        children = self._requests.get((endpoint, status))
        if children is None:  # endpoints and status codes are few: this stays small
            children = self._requests[(endpoint, status)] = (
                self._pending_counter(self._requests_total.labels(endpoint=endpoint,
                                                                   status=str(status))),
                self._pending_histogram(self._request_seconds.labels(endpoint=endpoint)))
        children[0].inc()
        children[1].observe(seconds)
        self.flush_soon()

    def count_prediction(self, label: str, confidence: float) -> None:
        child = self._predicted.get(label)
        if child is None:  # one per model label: a small, fixed set
            child = self._predicted[label] = self._pending_counter(
                self._predictions_total.labels(label=label))
        child.inc()
        self._confidence.observe(confidence)

    def observe_texts(self, token_counts: list[int], unk_counts: list[int]) -> None:
        for tokens, unknown in zip(token_counts, unk_counts, strict=True):
            self._input_tokens.observe(tokens)
            self._oov_ratio.observe(unknown / tokens if tokens else 0.0)

    def flush_soon(self) -> None:
        """Flush at the next event-loop iteration (once, however many requests end in this
        one); at once where no loop runs here (a worker thread, a test)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_loop is not loop:  # not yet scheduled on this loop (or on a dead one)
            self._flush_loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        # the loop's flush and a read from another thread (a test's registry read while the
        # app runs in TestClient's thread) must not both drain the same buffers
        with self._flush_lock:
            self._flush_loop = None
            for pending in self._pending:
                pending.flush()

    def render(self) -> bytes:
        if self.multiprocess_dir is not None:
            forget_dead_workers(self.multiprocess_dir)
        return generate_latest(self.registry)


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges (ready, queue depth, model info) of worker processes that are gone.

    uvicorn replaces workers (SIGHUP, a hung worker) and ends them by a signal, so nothing in
    the worker gets to call prometheus-client's mark_process_dead; without this, textclf_ready
    (livemin) stayed 0 for good after the first replacement and textclf_model_info listed dead
    pids. Counters and histograms of dead workers stay: totals must never go down."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # another worker's scrape may remove it first
                os.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

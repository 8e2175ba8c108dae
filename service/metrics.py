"""Every Prometheus metric of the service, on a registry passed in (no global state).

Label sets are small and fixed: `endpoint` is a route path from ENDPOINTS (anything else is
"other"), `status` an HTTP status code, `label` one of the model's labels. Request text never
becomes a label value.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

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
        r = registry if multiprocess_dir is None else None
        self.requests = Counter("textclf_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_duration = Histogram(
            "textclf_request_duration_seconds", "Whole-request latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.tokenization_duration = Histogram(
            "textclf_tokenization_duration_seconds", "Time to tokenize one request's inputs",
            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "textclf_queue_duration_seconds", "Time a request waits for its batch to start",
            buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "textclf_inference_duration_seconds", "Forward pass time of one batch",
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("textclf_batch_size", "Texts per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.input_tokens = Histogram("textclf_input_tokens", "Tokens per input text",
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.oov_ratio = Histogram("textclf_oov_ratio", "Share of a text's tokens not in the "
                                   "vocabulary", buckets=RATIO_BUCKETS, registry=r)
        self.prediction_confidence = Histogram(
            "textclf_prediction_confidence", "Probability of the top label",
            buckets=CONFIDENCE_BUCKETS, registry=r)
        self.predictions = Counter("textclf_predictions", "Texts classified, by top label",
                                   ["label"], registry=r)
        self.queue_depth = Gauge("textclf_queue_depth", "Texts waiting for a batch",
                                 multiprocess_mode="livesum", registry=r)
        self.model_info = Gauge("textclf_model_info", "The model being served (value 1)",
                                ["version", "device"], multiprocess_mode="liveall", registry=r)
        self.ready = Gauge("textclf_ready", "1 when the model is loaded and warmed up",
                           multiprocess_mode="livemin", registry=r)
        self.reloads = Counter("textclf_model_reloads", "Model reload attempts by result",
                               ["result"], registry=r)
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
        else:
            MultiProcessCollector(registry, path=multiprocess_dir)

    def set_model(self, version: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, device=device).set(1)

    def observe_texts(self, token_counts: list[int], unk_counts: list[int]) -> None:
        for tokens, unknown in zip(token_counts, unk_counts, strict=True):
            self.input_tokens.observe(tokens)
            self.oov_ratio.observe(unknown / tokens if tokens else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)

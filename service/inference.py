"""From validated requests to model answers: limits, tokenization, batching, ranking.

Every limit is checked before any model work; the model itself runs in the batcher.
"""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool

from model.tokenizer import UNK_ID
from service.batcher import JobResult
from service.config import Settings
from service.errors import ErrorType, ServiceError
from service.metrics import Metrics
from service.state import Serving

log = logging.getLogger("textclf.inference")
INLINE_TOKENIZE_CHARS = 50_000  # above this, tokenize off the event loop


def as_list(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def check_texts(texts: list[str], settings: Settings) -> None:
    if not texts:
        raise ServiceError(ErrorType.empty, "inputs is empty")
    if len(texts) > settings.max_client_batch:
        raise ServiceError(ErrorType.payload_too_large, f"{len(texts)} inputs; at most "
                           f"{settings.max_client_batch} per request (TEXTCLF_MAX_CLIENT_BATCH)")
    for i, text in enumerate(texts):
        if not text.strip():
            raise ServiceError(ErrorType.empty, f"input {i} is empty")
        if len(text) > settings.max_input_chars:
            raise ServiceError(ErrorType.payload_too_large, f"input {i} has {len(text)} "
                               f"characters; at most {settings.max_input_chars}")


def fit_to_limit(encoded: list[list[int]], limit: int, truncate: bool, left: bool) -> list[list[int]]:
    fitted = []
    for i, ids in enumerate(encoded):
        if len(ids) > limit:
            if not truncate:
                raise ServiceError(ErrorType.validation, f"input {i} has {len(ids)} tokens; the "
                                   f"limit is {limit} (send truncate: true to cut it)")
            ids = ids[-limit:] if left else ids[:limit]
        fitted.append(ids)
    return fitted


async def encode_texts(serving: Serving, texts: list[str], metrics: Metrics, truncate: bool,
                       left: bool = False) -> list[list[int]]:
    tick = time.perf_counter()
    encode = serving.predictor.encode
    if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:
        encoded = await run_in_threadpool(lambda: [encode(t) for t in texts])
    else:
        encoded = [encode(t) for t in texts]
    record_tokens(metrics, encoded, time.perf_counter() - tick)
    return fit_to_limit(encoded, serving.predictor.max_tokens, truncate, left)


def record_tokens(metrics: Metrics, encoded: list[list[int]], seconds: float) -> None:
    """Tokenizing's metrics: its time, and per text its tokens and unknown words."""
    metrics.tokenization.observe(seconds)
    metrics.observe_texts([len(e) for e in encoded], [e.count(UNK_ID) for e in encoded])


def rank(scores: list[float], labels: list[str], top_k: int | None) -> list[dict]:
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    return [{"label": labels[i], "score": scores[i]} for i in order[:top_k]]


async def prepare(serving: Serving, texts: list[str], *, truncate: bool, settings: Settings,
                  metrics: Metrics, left: bool = False) -> list[list[int]]:
    """Check limits and tokenize: everything before the model, done while the request still
    counts as `arriving` for the batcher."""
    check_texts(texts, settings)
    log_inputs(texts, settings)
    return await encode_texts(serving, texts, metrics, truncate, left)


def log_inputs(texts: list[str], settings: Settings) -> None:
    """Request text goes to the log only when TEXTCLF_LOG_INPUTS asks for it (privacy)."""
    if settings.log_inputs:
        log.info("inputs: %r", texts)


def label_scores(serving: Serving, result: JobResult, single: bool, *, raw_scores: bool,
                 top_k: int | None, metrics: Metrics) -> object:
    """/predict's body: per text the labels sorted by score, best first."""
    labels = serving.predictor.labels
    probabilities = result.output.probabilities
    for row in probabilities:
        best = max(range(len(row)), key=row.__getitem__)
        metrics.count_prediction(labels[best], row[best])
    scores = result.output.logits if raw_scores else probabilities
    ranked = [rank(row, labels, top_k) for row in scores]
    return ranked[0] if single else ranked


def feature_vectors(result: JobResult, normalize: bool) -> list[list[float]]:
    """Pooled LSTM features per text: always a list of vectors, as text-embeddings-inference."""
    features = result.output.features  # (B, F)
    if normalize:
        features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return features.tolist()

"""Predictor: a loaded artifact on a device. Tokenize, classify, embed; no HTTP, no asyncio."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifact import Artifact, load_artifact
from model.tokenizer import PAD_ID, UNK_ID, Token, pad

WARMUP_TEXTS = ("warm up", "a slightly longer text to warm up the model " * 4, "")


@dataclass
class BatchOutput:
    probabilities: list[list[float]]  # (B, C) softmax, rows in input order
    logits: list[list[float]]         # (B, C)
    features: torch.Tensor            # (B, F) pooled text vectors, on the CPU


# A text starts a new length bucket when it is this many times, and this many tokens, longer
# than the shortest in the current one: padding a 30-token text to 256 costs as much as 8 more
# texts, while splitting a batch of similar lengths makes the per-step matrix products smaller
# (per token ~7% slower at 16 rows than at 32), so only outliers get their own bucket.
BUCKET_RATIO, BUCKET_SLACK = 1.5, 8


def length_buckets(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, stop) ranges over ascending `sizes`."""
    ranges, start = [], 0
    for i, size in enumerate(sizes):
        low = max(sizes[start], 1)
        if size > low * BUCKET_RATIO and size - low > BUCKET_SLACK:
            ranges.append((start, i))
            start = i
    ranges.append((start, len(sizes)))
    return ranges


class Predictor:
    def __init__(self, artifact: Artifact, device: torch.device, max_tokens: int | None = None,
                 dtype: torch.dtype = torch.float32):
        self.artifact = artifact
        self.model = artifact.model
        self.dtype = dtype
        # Batches (/predict, text vectors) run in `dtype`; word vectors and /explain (gradients)
        # keep the float32 weights, so a lower precision costs a second, smaller copy.
        self.forward_model = (self.model if dtype == torch.float32
                              else copy.deepcopy(self.model).to(dtype))
        self.vocab = artifact.vocab
        self.device = device
        self.labels = artifact.labels
        self.max_tokens = min(max_tokens or artifact.max_length, artifact.max_length)
        # torch intra-op threads as set where the model was loaded (TEXTCLF_NUM_THREADS); the
        # batcher applies it to the event loop thread too
        self.num_threads = torch.get_num_threads()
        weight = self.model.embedding.weight.detach().float().cpu()  # (V, E)
        self.embedding = weight
        # unit rows for cosine-similarity neighbours; <pad> is all zero, keep it at zero
        self._unit = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @classmethod
    def load(cls, model_dir: Path, device: torch.device, max_tokens: int | None = None,
             dtype: torch.dtype = torch.float32) -> Predictor:
        return cls(load_artifact(model_dir, device), device, max_tokens, dtype)

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def encode(self, text: str) -> list[int]:
        """All token ids of a text (the caller truncates, so it can also refuse long inputs)."""
        return self.vocab.encode(text)

    @torch.inference_mode()
    def run_batch(self, encoded: list[list[int]]) -> BatchOutput:
        """One batch of already-truncated id lists; texts of similar length run together (see
        `length_buckets`), each bucket padded to its longest. Rows come back in input order."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        ranges = length_buckets([len(encoded[i]) for i in order])
        if len(ranges) == 1:
            features = self._features(encoded)  # (B, F)
        else:
            parts = [self._features([encoded[i] for i in order[a:b]]) for a, b in ranges]
            back = torch.tensor(order).argsort().to(self.device)  # sorted rows -> input order
            features = torch.cat(parts).index_select(0, back)
        features = features.float()
        # the float32 output layer whatever the dtype: 3x faster than in bf16 on the CPU (48 vs
        # 15 us per batch of 32) and no rounding of the logits. Dropout is off in eval.
        logits = self.model.classifier(features)  # (B, C)
        probabilities = torch.softmax(logits, dim=1)  # subtracts the max: no overflow, no NaN
        return BatchOutput(probabilities.cpu().tolist(), logits.cpu().tolist(), features.cpu())

    def _features(self, encoded: list[list[int]]) -> torch.Tensor:
        ids, lengths = pad(encoded)  # (B, T), (B,)
        return self.forward_model.features(ids.to(self.device), lengths.to(self.device))  # (B, F)

    def warmup(self) -> None:
        self.run_batch([self.encode(t)[: self.max_tokens] for t in WARMUP_TEXTS])

    def tokenize(self, text: str) -> list[Token]:
        return self.vocab.tokenize(text)

    def word_vectors(self, words: list[str], normalize: bool, neighbors: int) -> list[dict]:
        """Embedding rows for single words, after the tokenizer's normalisation."""
        results = []
        for word in words:
            pieces = self.vocab.tokenize(word)
            key = "".join(t.text for t in pieces) if pieces else word
            word_id = self.vocab.lookup(key)
            vector = self._unit[word_id] if normalize else self.embedding[word_id]
            results.append({
                "word": word, "token": key, "id": word_id, "in_vocab": word_id != UNK_ID,
                "vector": vector.tolist(),
                "neighbors": self.nearest(word_id, neighbors) if neighbors else [],
            })
        return results

    def nearest(self, word_id: int, k: int) -> list[dict]:
        """The k vocabulary words closest by cosine similarity (itself, <pad>, <unk> excluded)."""
        scores = self._unit @ self._unit[word_id]  # (V,)
        scores[[PAD_ID, UNK_ID, word_id]] = float("-inf")
        top = torch.topk(scores, min(k, max(0, len(self.vocab) - 3)))
        return [{"word": self.vocab.itos[i], "score": round(float(s), 6)}
                for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def info(self) -> dict:
        config = self.artifact.config
        return {
            "model_name": self.artifact.name, "model_version": self.version,
            "weights_sha256": self.artifact.sha256, "labels": self.labels,
            "vocab_size": len(self.vocab), "embedding_dim": config["model"]["embedding_dim"],
            "hidden_size": config["model"]["hidden_size"],
            "num_layers": config["model"]["num_layers"],
            "bidirectional": config["model"]["bidirectional"],
            "pooling": config["model"]["pooling"], "device": str(self.device), "dtype": self.dtype_name,
            "max_tokens": self.max_tokens, "model_dir": str(self.artifact.path),
        }

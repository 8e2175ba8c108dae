"""Predictor: a loaded artifact on a device. Tokenize, classify, embed; no HTTP, no asyncio."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifact import Artifact, load_artifact
from model.scripted import Outputs, ScriptedClassifier, scripted_fits
from model.tokenizer import PAD_ID, UNK_ID, Token, pad

WARMUP_TEXTS = ("warm up", "a slightly longer text to warm up the model " * 4, "")


@dataclass
class BatchOutput:
    probabilities: list[list[float]]  # (B, C) softmax, rows in input order
    logits: list[list[float]]         # (B, C)
    pass_features: torch.Tensor       # (N, F) pooled text vectors of the whole pass, on the CPU
    rows: slice | None = None         # this output's B rows of them; None: all

    @property
    def features(self) -> torch.Tensor:
        """(B, F), sliced when read: only text vectors need them, and a slice per request cost
        ~2.4 us in the batcher's hand-out."""
        return self.pass_features if self.rows is None else self.pass_features[self.rows]


@dataclass
class PaddedBatch:
    ids: list[torch.Tensor]      # per length bucket (see `length_buckets`): (b, T) on the device
    lengths: list[torch.Tensor]  # (b,) each
    back: torch.Tensor | None    # rows of the concatenated buckets -> input order; None: one bucket
    scripted: bool               # served by model.scripted (CPU, every bucket little padding)


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
        self.scripted = (ScriptedClassifier(self.forward_model, self.model.classifier)
                         if ScriptedClassifier.supports(self.forward_model) else None)
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

    def run_batch(self, encoded: list[list[int]]) -> BatchOutput:
        """One batch of already-truncated id lists; texts of similar length run together (see
        `length_buckets`), each bucket padded to its longest. Rows come back in input order."""
        return self.finish(self.compute(self.pad_batch(encoded)))

    def pad_batch(self, encoded: list[list[int]]) -> PaddedBatch:
        """The Python half before the model: sort by length, split into buckets, pad, move to
        the device. Nothing here waits for the model."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        ranges = length_buckets([len(encoded[i]) for i in order])
        back = None
        if len(ranges) > 1:
            back = torch.tensor(order).argsort().to(self.device)  # sorted rows -> input order
            encoded = [encoded[i] for i in order]
        buckets = [encoded[a:b] for a, b in ranges]
        scripted = self.scripted is not None and all(
            scripted_fits([len(ids) or 1 for ids in bucket]) for bucket in buckets)
        padded = [pad(bucket) for bucket in buckets]  # (b, T), (b,) each
        ids, lengths = [i for i, _ in padded], [n for _, n in padded]
        if self.device.type != "cpu":  # (on the CPU `.to` is a no-op, but not a free one)
            ids, lengths = [i.to(self.device) for i in ids], [n.to(self.device) for n in lengths]
        return PaddedBatch(ids, lengths, back, scripted)

    @torch.inference_mode()
    def compute(self, batch: PaddedBatch) -> Outputs:
        """The tensor half, on the calling thread: probabilities, logits (B, C) and features
        (B, F), rows in input order."""
        if batch.scripted:
            assert self.scripted is not None
            return self.scripted.run(batch.ids, batch.lengths, batch.back)
        parts = [self._classify(ids, lengths) for ids, lengths in zip(batch.ids, batch.lengths, strict=True)]
        if batch.back is None:
            return parts[0]
        probabilities, logits, features = (torch.cat(p).index_select(0, batch.back)
                                           for p in zip(*parts, strict=True))
        return probabilities, logits, features

    def launch(self, batch: PaddedBatch, after: torch.futures.Future | None = None,
               ) -> torch.futures.Future | None:
        """`compute` started on torch's inter-op threads (after `after`, if given), returning
        at once; None when this batch cannot go there (see model.scripted)."""
        if not batch.scripted:
            return None
        assert self.scripted is not None
        with torch.inference_mode():
            return self.scripted.launch(batch.ids, batch.lengths, batch.back, after)

    def finish(self, outputs: Outputs) -> BatchOutput:
        probabilities, logits, features = (t.cpu() for t in outputs)
        return BatchOutput(probabilities.tolist(), logits.tolist(), features)

    def _classify(self, ids: torch.Tensor, lengths: torch.Tensor) -> Outputs:
        features = self.forward_model.features(ids, lengths).float()  # (B, F)
        # the float32 output layer whatever the dtype: 3x faster than in bf16 on the CPU (48 vs
        # 15 us per batch of 32) and no rounding of the logits. Dropout is off in eval.
        logits = self.model.classifier(features)  # (B, C)
        return torch.softmax(logits, dim=1), logits, features  # softmax: no overflow, no NaN

    def warmup(self) -> None:
        """Twice each way a pass can run: TorchScript optimises a graph on its second call."""
        batch = self.pad_batch([self.encode(t)[: self.max_tokens] for t in WARMUP_TEXTS])
        for _ in range(2):
            self.finish(self.compute(batch))
            launched = self.launch(batch)
            if launched is not None:
                self.finish(launched.wait())

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

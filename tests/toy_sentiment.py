"""A toy sentiment model for the explanation tests: texts of filler words with one or two
positive or negative words, an LSTM trained on them for a few seconds (saturated, as real
models are), saved as an artifact. Built once per test session (conftest.toy_artifact)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

from model.artifact import save_artifact
from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary

POSITIVE = ["good", "great", "excellent", "love", "nice"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "poor"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "it", "this", "really", "story"]


def toy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.choices(FILLER, k=rng.randint(2, 7))
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice((NEGATIVE, POSITIVE)[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def train_toy(config: dict, steps: int = 60) -> tuple[LSTMClassifier, Vocabulary]:
    torch.manual_seed(0)
    texts, labels = toy_corpus(256)
    vocab = Vocabulary.build(texts)
    model = LSTMClassifier(ModelConfig(vocab_size=len(vocab), num_classes=2, **config))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    y = torch.tensor(labels)
    for step in range(steps):
        rows = torch.arange(32 * step, 32 * step + 32) % len(texts)
        ids, lengths = vocab.encode_batch([texts[i] for i in rows])
        loss = nn.functional.cross_entropy(model(ids, lengths), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


def save_toy_artifact(out: Path) -> Path:
    config = {"embedding_dim": 16, "hidden_size": 12, "num_layers": 2, "bidirectional": True,
              "dropout": 0.1, "pooling": "max"}
    model, vocab = train_toy(config)
    save_artifact(out, model, vocab, ["negative", "positive"], name="toy", max_length=12)
    return out

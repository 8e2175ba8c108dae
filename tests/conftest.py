"""Shared fixtures: a tiny artifact with fixed weights, built in tmp_path, a test client, and the
toy sentiment model (tests/toy_sentiment.py) for the explanation tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from model.artifact import Artifact, load_artifact, save_artifact
from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary

CORPUS = [
    "the match ended with a late goal", "the team won the cup final",
    "shares fell as the market closed", "the bank raised interest rates",
    "the new phone has a faster chip", "software update fixes the bug",
]
LABELS = ["business", "sport", "tech"]


def tiny_model(vocab_size: int, seed: int = 0, **overrides: object) -> LSTMClassifier:
    """A small classifier whose weights depend only on `seed`: exact, repeatable answers."""
    torch.manual_seed(seed)
    options = {"embedding_dim": 8, "hidden_size": 6, "num_layers": 1, "bidirectional": True,
               "dropout": 0.0, "pooling": "max"} | overrides
    config = ModelConfig(vocab_size=vocab_size, num_classes=len(LABELS), **options)  # type: ignore[arg-type]
    return LSTMClassifier(config).eval()


def build_artifact(path: Path, seed: int = 0, max_length: int = 16) -> Path:
    vocab = Vocabulary.build(CORPUS)
    save_artifact(path, tiny_model(len(vocab), seed), vocab, LABELS, name="tiny",
                  max_length=max_length, extra={"data": {"name": "fixture"}})
    return path


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    return build_artifact(tmp_path / "artifact")


@pytest.fixture
def settings_factory(artifact_dir: Path):
    from service.config import Settings

    def make(**overrides: object) -> Settings:
        return Settings(model_dir=artifact_dir, device="cpu", **overrides)  # type: ignore[arg-type]

    return make


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(settings_factory, registry: CollectorRegistry) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings_factory(), registry)) as test_client:
        yield test_client


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as closed; a timeout fails)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.fixture(scope="session")
def toy_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy sentiment model of tests/toy_sentiment.py, trained once per session."""
    from toy_sentiment import save_toy_artifact

    return save_toy_artifact(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def toy_artifact(toy_artifact_dir: Path) -> Artifact:
    return load_artifact(toy_artifact_dir)

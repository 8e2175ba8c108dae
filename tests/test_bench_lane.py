"""bench/lane.py: /predict driven through the server's HTTP protocol in memory, timed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from bench import lane
from service.config import Settings
from service.predictor import Predictor


def settings(artifact_dir: Path, **overrides: object) -> Settings:
    return Settings(model_dir=artifact_dir, device="cpu", num_threads=1, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [True, False])
def test_every_request_is_answered_and_timed(artifact_dir: Path, model: bool):
    runs = asyncio.run(lane.measure(settings(artifact_dir), connections=4, total=40, repeat=2,
                                    model=model))
    assert len(runs) == 2
    for cpu_us, rps, loop_us in runs:
        assert cpu_us > 0 and loop_us > 0 and rps > 0
        assert loop_us <= cpu_us * 1.05  # the loop thread's share of the process's CPU


def test_a_request_not_answered_200_fails_the_run(artifact_dir: Path, monkeypatch):
    monkeypatch.setattr(lane, "request_texts", lambda words: [" "])  # an empty input: 422
    with pytest.raises(RuntimeError, match="not answered 200"):
        asyncio.run(lane.measure(settings(artifact_dir), connections=2, total=4, repeat=1))


def test_without_model_gives_fixed_outputs_of_the_model_shapes(artifact_dir: Path):
    predictor = Predictor.load(artifact_dir, torch.device("cpu"))
    batch = predictor.pad_batch([[2, 3], [4]])
    real = predictor.compute(batch)
    lane.without_model(predictor)
    fixed = predictor.compute(batch)
    assert [t.shape for t in fixed] == [t.shape for t in real]
    assert torch.allclose(fixed[0].sum(dim=1), torch.ones(2))  # probabilities
    assert predictor.launch(predictor.pad_batch([[2, 3]])) is None  # every pass through compute

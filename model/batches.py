"""Batching of pre-encoded texts for training and evaluation.

Texts of similar length go in the same batch (sorted inside shuffled pools), so little
compute is spent on padding; the shuffle is driven by a seeded generator, so it repeats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from model.tokenizer import pad


def collate(encoded: Sequence[Sequence[int]], rows: Sequence[int],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (B, T) and lengths (B,) for the given rows (`pad`)."""
    ids, lengths = pad([encoded[r] for r in rows])
    return ids.to(device), lengths.to(device)


def bucketed_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                     pool_batches: int = 50) -> list[list[int]]:
    """Row indices grouped into batches: shuffle, sort each pool of `pool_batches` batches by
    length, cut into batches, shuffle the batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda r: lengths[r])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Deterministic length-sorted batches for evaluation."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


@torch.inference_mode()
def predict_logits(model: nn.Module, encoded: Sequence[Sequence[int]], device: torch.device,
                   batch_size: int = 128) -> torch.Tensor:
    """Logits (N, C) for every encoded text, in input order."""
    was_training = model.training
    model.eval()
    lengths = [len(e) for e in encoded]
    out: torch.Tensor | None = None
    for rows in sorted_batches(lengths, batch_size):
        logits = model(*collate(encoded, rows, device)).float().cpu()
        if out is None:
            out = torch.empty(len(encoded), logits.shape[1])
        out[rows] = logits
    model.train(was_training)
    return out if out is not None else torch.empty(0, 0)

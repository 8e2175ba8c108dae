"""bench/forward_variants.py: the float32 variants it times must compute the served answer, or
their timings would compare different work."""

from __future__ import annotations

import torch

from bench.forward_variants import in_dtype, packed, time_segmented, traced
from model.tokenizer import pad
from tests.conftest import tiny_model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = [7, 3, 12, 12, 5, 9, 1, 10]
    return pad([torch.randint(2, 40, (n,), generator=generator).tolist() for n in lengths])


@torch.inference_mode()
def test_float32_variants_give_the_served_probabilities() -> None:
    model = tiny_model(40).eval()
    ids, lengths = _batch()
    served = model(ids, lengths).softmax(1)
    for forward in (packed(model, model.lstm), time_segmented(model, 2), time_segmented(model, 3),
                    traced(model, ids, lengths)):
        assert torch.allclose(forward(ids, lengths), served, atol=1e-6)


@torch.inference_mode()
def test_lower_precision_is_close_but_not_the_same() -> None:
    model = tiny_model(40).eval()
    ids, lengths = _batch()
    half = in_dtype(model, torch.bfloat16)(ids, lengths)
    assert half.dtype == torch.float32 and torch.allclose(half, model(ids, lengths).softmax(1), atol=0.05)

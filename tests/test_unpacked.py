"""model/unpacked.py: the LSTM without packing gives the packed LSTM's answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.unpacked import encode_unpacked, pooled_unpacked, reversed_rows, select_rows

LENGTHS = torch.tensor([5, 2, 4])  # B = 3, T = 5


def packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, (h_n, _) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], h_n


def make(layers: int, bidirectional: bool) -> tuple[nn.LSTM, torch.Tensor]:
    torch.manual_seed(layers + 2 * bidirectional)
    lstm = nn.LSTM(3, 4, num_layers=layers, bidirectional=bidirectional, batch_first=True).eval()
    return lstm, torch.randn(3, 5, 3)  # (B, T, E)


def test_reversed_rows_reverse_each_text_within_its_length():
    rows = reversed_rows(LENGTHS, 5)
    x = torch.arange(5)[:, None].expand(5, 3).float()[:, :, None]  # (T, B, 1): each step's index
    got = select_rows(x, rows)[:, :, 0].t().tolist()  # (B, T)
    assert got == [[4, 3, 2, 1, 0], [1, 0, 2, 3, 4], [3, 2, 1, 0, 4]]  # padding stays in place
    assert torch.equal(rows[rows], torch.arange(15))  # applied twice: the identity


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_states_and_final_states_are_the_packed_lstms(layers, bidirectional):
    lstm, x = make(layers, bidirectional)
    with torch.inference_mode():
        want_states, want_h_n = packed(lstm, x, LENGTHS)
        states, h_n = encode_unpacked(lstm, x, LENGTHS)
    torch.testing.assert_close(states, want_states, atol=1e-6, rtol=0)  # zero past each length
    torch.testing.assert_close(h_n, want_h_n, atol=1e-6, rtol=0)


@pytest.mark.parametrize("use_max", [True, False])
def test_pooling_is_over_each_texts_own_steps(use_max):
    lstm, x = make(1, True)
    with torch.inference_mode():
        states, _ = packed(lstm, x, LENGTHS)
        valid = torch.arange(5)[None, :, None] < LENGTHS[:, None, None]  # (B, T, 1)
        want = (states.masked_fill(~valid, float("-inf")).amax(dim=1) if use_max
                else states.sum(dim=1) / LENGTHS[:, None])
        got = pooled_unpacked(lstm, x, LENGTHS, use_max)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

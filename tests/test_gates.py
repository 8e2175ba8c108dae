"""model.gates: the reference LSTM that recomputes every gate matches nn.LSTM, the classifier's
own (packed and unpacked) paths and a trained artifact, and its traces obey the LSTM equations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.gates import trace_batch, trace_lstm
from model.network import LSTMClassifier, ModelConfig

GATE_TOL = 1e-5


def _packed_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=lstm.batch_first, enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=lstm.batch_first, total_length=x.shape[1])
    return out, h_n, c_n


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_lstm_matches_nn_lstm(num_layers: int, bidirectional: bool) -> None:
    torch.manual_seed(num_layers * 10 + bidirectional)
    lstm = nn.LSTM(6, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                   dropout=0.5 if num_layers > 1 else 0.0).eval()
    lengths = torch.tensor([9, 3, 1, 6])
    x = torch.randn(4, 9, 6)
    x[1, 3:] = 100.0  # garbage in the padding must not matter
    with torch.no_grad():
        expected = _packed_lstm(lstm, x, lengths)
        got = trace_batch(lstm, x, lengths)
    for want, have in zip(expected, got, strict=True):
        assert want.shape == have.shape
        assert (want - have).abs().max() < GATE_TOL


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("grad", [False, True])  # packed LSTM / the unpacked inference path
def test_reference_lstm_matches_classifier_encode(num_layers: int, bidirectional: bool,
                                                  grad: bool) -> None:
    torch.manual_seed(3)
    model = LSTMClassifier(ModelConfig(vocab_size=30, num_classes=3, embedding_dim=8,
                                       hidden_size=7, num_layers=num_layers,
                                       bidirectional=bidirectional)).eval()
    ids = torch.randint(2, 30, (3, 8))
    lengths = torch.tensor([8, 6, 8])  # little padding: inference takes the unpacked LSTM
    with torch.set_grad_enabled(grad):
        states, h_n = model.encode(ids, lengths)
    with torch.no_grad():
        ids[1, 6:] = 0
        ref_states, ref_h_n, _ = trace_batch(model.lstm, model.embedding(ids), lengths)
    assert (states - ref_states).abs().max() < GATE_TOL
    assert (h_n - ref_h_n).abs().max() < GATE_TOL


def test_gate_trace_is_consistent(toy_artifact) -> None:
    """Gates in range; c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t); backward is in token order."""
    model = toy_artifact.model
    ids = torch.tensor(toy_artifact.vocab.encode("the movie was great"))
    with torch.no_grad():
        trace = trace_lstm(model.lstm, model.embedding(ids))
    assert len(trace.directions) == 4
    for d in trace.directions:
        for gate in (d.input, d.forget, d.output):
            assert gate.min() >= 0 and gate.max() <= 1
        prev = torch.zeros_like(d.cell[0])
        order = range(len(ids)) if d.direction == "forward" else reversed(range(len(ids)))
        for t in order:
            assert torch.allclose(d.cell[t], d.forget[t] * prev + d.input[t] * d.candidate[t])
            assert torch.allclose(d.hidden[t], d.output[t] * torch.tanh(d.cell[t]))
            prev = d.cell[t]


def test_reference_lstm_matches_trained_artifact(toy_artifact) -> None:
    model, vocab = toy_artifact.model, toy_artifact.vocab
    texts = ["the movie was great", "awful", "this really was a terrible terrible story", "it"]
    ids, lengths = vocab.encode_batch(texts)
    with torch.no_grad():
        states, h_n = model.encode(ids, lengths)
        _, _, c_n = _packed_lstm(model.lstm, model.embedding(ids), lengths)
        ref_states, ref_h_n, ref_c_n = trace_batch(model.lstm, model.embedding(ids), lengths)
    assert (states - ref_states).abs().max() < GATE_TOL
    assert (h_n - ref_h_n).abs().max() < GATE_TOL
    assert (c_n - ref_c_n).abs().max() < GATE_TOL

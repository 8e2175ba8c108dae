"""Reference step-by-step LSTM: recompute every gate of a trained `nn.LSTM`, token by token.

PyTorch stacks the four gates in the order i, f, g, o in
    weight_ih_l{k}[_reverse] (4H, I), weight_hh_l{k}[_reverse] (4H, H),
    bias_ih_l{k}[_reverse] (4H,), bias_hh_l{k}[_reverse] (4H,)
and computes at each step t
    z = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh               (4H,)
    i = sigmoid(z_i)  f = sigmoid(z_f)  g = tanh(z_g)  o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * g                                h_t = o * tanh(c_t)
with h_0 = c_0 = 0. Layer k > 0 reads the concatenated [forward h_t, backward h_t] of layer k-1
(inter-layer dropout is off in eval mode). The backward direction runs over the valid tokens in
reverse order, so padding never enters either direction; everything here works on one text's
valid tokens only (T = its length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.unpacked import lstm_params

DIRECTIONS = ("forward", "backward")


@dataclass
class DirectionTrace:
    """All gate values of one layer and direction, rows in *token* order (also for backward)."""

    layer: int
    direction: str            # "forward" | "backward"
    input: torch.Tensor       # (T, H) i_t
    forget: torch.Tensor      # (T, H) f_t
    candidate: torch.Tensor   # (T, H) g_t
    output: torch.Tensor      # (T, H) o_t
    cell: torch.Tensor        # (T, H) c_t
    hidden: torch.Tensor      # (T, H) h_t

    @property
    def final_hidden(self) -> torch.Tensor:
        """(H,) the state after the direction's last step: token T-1 forward, token 0 backward."""
        return self.hidden[-1] if self.direction == "forward" else self.hidden[0]

    @property
    def final_cell(self) -> torch.Tensor:
        return self.cell[-1] if self.direction == "forward" else self.cell[0]


@dataclass
class LSTMTrace:
    directions: list[DirectionTrace]  # layer-major: (l0 fwd, l0 bwd, l1 fwd, ...) like h_n
    outputs: torch.Tensor             # (T, H*D) last layer's [forward, backward] hidden states
    h_n: torch.Tensor                 # (layers*D, H)
    c_n: torch.Tensor                 # (layers*D, H)


def direction_weights(lstm: nn.LSTM, layer: int,
                      reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_ih (4H, I), W_hh (4H, H) and the summed bias b_ih + b_hh (4H,) of one layer/direction."""
    w_ih, w_hh, *biases = lstm_params(lstm, layer, reverse)
    if biases:
        return w_ih, w_hh, biases[0] + biases[1]
    return w_ih, w_hh, torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)


def run_direction(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                  bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """One direction over x (T, I) in the given order -> {gate name: (T, H)} in that order."""
    hidden_size = w_hh.shape[1]
    projected = x @ w_ih.T + bias  # (T, 4H) input part of every step at once
    h = x.new_zeros(hidden_size)   # (H,)
    c = x.new_zeros(hidden_size)   # (H,)
    steps: dict[str, list[torch.Tensor]] = {k: [] for k in
                                            ("input", "forget", "candidate", "output", "cell",
                                             "hidden")}
    for t in range(x.shape[0]):
        z = projected[t] + w_hh @ h  # (4H,)
        z_i, z_f, z_g, z_o = z.chunk(4)
        i, f, g, o = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g), torch.sigmoid(z_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, value in zip(steps, (i, f, g, o, c, h), strict=True):
            steps[name].append(value)
    return {name: torch.stack(values) for name, values in steps.items()}  # each (T, H)


def trace_lstm(lstm: nn.LSTM, x: torch.Tensor) -> LSTMTrace:
    """Every gate of every layer/direction for one text's valid inputs x (T, I), T >= 1."""
    if getattr(lstm, "proj_size", 0):
        raise ValueError("LSTMs with proj_size > 0 are not supported")
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"expected inputs of shape (T >= 1, I), got {tuple(x.shape)}")
    num_dirs = 2 if lstm.bidirectional else 1
    traces: list[DirectionTrace] = []
    layer_input = x  # (T, I) then (T, H*D)
    for layer in range(lstm.num_layers):
        outputs = []
        for d in range(num_dirs):
            reverse = d == 1
            seq = layer_input.flip(0) if reverse else layer_input
            gates = run_direction(seq, *direction_weights(lstm, layer, reverse))
            if reverse:  # back to token order
                gates = {name: value.flip(0) for name, value in gates.items()}
            traces.append(DirectionTrace(layer, DIRECTIONS[d], **gates))
            outputs.append(gates["hidden"])
        layer_input = torch.cat(outputs, dim=1)  # (T, H*D)
    h_n = torch.stack([t.final_hidden for t in traces])  # (layers*D, H)
    c_n = torch.stack([t.final_cell for t in traces])    # (layers*D, H)
    return LSTMTrace(traces, layer_input, h_n, c_n)


def trace_batch(lstm: nn.LSTM, x: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded batch x (B, T, I) with lengths (B,) -> outputs (B, T, H*D) zero past each length,
    h_n and c_n (layers*D, B, H): what a packed `nn.LSTM` returns, recomputed text by text."""
    traces = [trace_lstm(lstm, x[b, : int(n)]) for b, n in enumerate(lengths.tolist())]
    width = traces[0].outputs.shape[1]
    outputs = x.new_zeros(x.shape[0], x.shape[1], width)  # (B, T, H*D)
    for b, trace in enumerate(traces):
        outputs[b, : trace.outputs.shape[0]] = trace.outputs
    h_n = torch.stack([t.h_n for t in traces], dim=1)  # (layers*D, B, H)
    c_n = torch.stack([t.c_n for t in traces], dim=1)  # (layers*D, B, H)
    return outputs, h_n, c_n


def token_gates(trace: LSTMTrace, detail: bool = False) -> list[list[dict]]:
    """JSON-ready gate summary per token (outer list) and layer/direction (inner): means of the
    gates over the H hidden units and the L2 norm of c_t; with `detail`, the full (H,) vectors.
    Computed per direction in one go and moved to the CPU once."""
    columns = []
    for d in trace.directions:
        summary = {"input_gate": d.input.mean(1), "forget_gate": d.forget.mean(1),   # (T,)
                   "output_gate": d.output.mean(1),
                   "cell_norm": torch.linalg.vector_norm(d.cell, dim=1)}             # (T,)
        values = {k: v.tolist() for k, v in summary.items()}
        if detail:
            values |= {k: getattr(d, k).tolist()  # (T, H)
                       for k in ("input", "forget", "output", "candidate", "cell", "hidden")}
        columns.append((d, values))
    length = trace.outputs.shape[0]
    return [[{"layer": d.layer, "direction": d.direction, **{k: v[t] for k, v in values.items()}}
             for d, values in columns] for t in range(length)]

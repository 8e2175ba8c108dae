"""The LSTM without packing, for inference on the CPU with little padding (model.network uses
it when at least UNPACKED_MIN_FILL of the padded grid is real tokens; model.scripted compiles it).

One oneDNN kernel call per direction over the padded batch, ~1.5x faster per step than the
packed CPU loop, with the packed LSTM's results up to float rounding. The backward direction
runs forward over each text reversed within its length, so padding never reaches a state that
counts.

Shapes: B batch, T time steps, E embedding dim, H hidden size, D directions (1 or 2).
"""

from __future__ import annotations

import torch
from torch import nn

# Everything runs time-major, (T, B, ...), the layout the LSTM kernel works in; rows of the
# (T*B, F) view are t * B + b.


def reversed_rows(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Rows that reverse each text's first `length` steps and keep its padding in place
    (applying them twice is the identity)."""
    t = torch.arange(steps)[:, None]
    lengths = lengths.cpu()[None, :]
    within = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    return (within * lengths.shape[1] + torch.arange(lengths.shape[1])).reshape(-1)


def select_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(T, B, F) -> those rows of its (T*B, F) view, (-1, B, F) (index_select: ~5x faster than
    the equivalent gather)."""
    return x.reshape(-1, x.shape[2]).index_select(0, rows).view(-1, x.shape[1], x.shape[2])


def lstm_params(lstm: nn.LSTM, layer: int, reverse: bool) -> list[torch.Tensor]:
    """The weights (and biases) of one direction of one layer, in torch.lstm's order."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    params = [getattr(lstm, f"{kind}{suffix}") for kind in ("weight_ih", "weight_hh")]
    if lstm.bias:
        params += [getattr(lstm, f"bias_ih{suffix}"), getattr(lstm, f"bias_hh{suffix}")]
    return params


def unpacked_layers(lstm: nn.LSTM) -> list[list[list[torch.Tensor]]]:
    """`lstm_params` of every layer ([layer][direction], forward first), as the unpacked path
    takes them."""
    directions = (False, True) if lstm.bidirectional else (False,)
    return [[lstm_params(lstm, layer, reverse) for reverse in directions]
            for layer in range(lstm.num_layers)]


def _direction(params: list[torch.Tensor], has_bias: bool, hidden: int,
               x: torch.Tensor) -> torch.Tensor:
    """One direction of one layer over padded (T, B, in) input, from zero state -> (T, B, H).
    Weights in oneDNN's layout (model.scripted packs them; biases then always given) go to the
    kernel itself, which otherwise reorders them on every call."""
    zeros = x.new_zeros(1, x.shape[1], hidden)
    if params[0].is_mkldnn:  # mode 2: LSTM; returns (output, h_n, c_n, workspace)
        return torch.ops.aten.mkldnn_rnn_layer(x, params[0], params[1], params[2], params[3],
                                               zeros[0], zeros[0], False, [x.shape[0]], 2, hidden,
                                               1, True, False, False, False)[0]
    return torch.lstm(x, [zeros, zeros], params, has_bias, 1, 0.0, False, False, False)[0]


def run_unpacked(layers: list[list[list[torch.Tensor]]], has_bias: bool, hidden: int,
                 x: torch.Tensor, lengths: torch.Tensor, want_h_n: bool,
                 ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """x (T, B, E) -> the last layer's outputs per direction, the backward one still reversed
    within each length; h_n (layers*D, B, H) if `want_h_n`; the reversing rows. `layers` as
    `unpacked_layers` gives them. TorchScript compiles it too (model.scripted).

    Forward states at t < length never see the padding that follows. The backward direction
    runs forward over each text reversed within its length (padding stays at the end); its
    state after the text's first token is the one at step length - 1."""
    steps, batch = x.shape[0], x.shape[1]
    reverse = reversed_rows(lengths, steps).to(x.device)
    last: torch.Tensor | None = None
    if want_h_n:
        last = ((lengths.cpu() - 1) * batch + torch.arange(batch)).to(x.device)
    finals: list[torch.Tensor] = []
    outputs = [x]
    for layer, directions in enumerate(layers):
        if layer > 0:  # the next layer reads both directions in text order
            x = (torch.cat([outputs[0], select_rows(outputs[1], reverse)], dim=2)
                 if len(outputs) > 1 else outputs[0])
        outputs = [_direction(directions[0], has_bias, hidden, x)]
        if len(directions) > 1:
            outputs.append(_direction(directions[1], has_bias, hidden, select_rows(x, reverse)))
        if last is not None:
            finals += [select_rows(out, last)[0] for out in outputs]
    return outputs, torch.stack(finals) if len(finals) > 0 else None, reverse


def pool_unpacked(outputs: list[torch.Tensor], lengths: torch.Tensor, use_max: bool,
                  padded: bool = True) -> torch.Tensor:
    """Max or mean pooling of `run_unpacked`'s outputs (T, B, H) per direction -> (B, H*D).
    Neither cares about the order of the steps, so the backward states are pooled as they
    come, never reversed back; the padded steps are overwritten in place (the same rows both
    ways). `padded` False: no text is shorter than T, nothing to overwrite."""
    padding = torch.zeros(0, dtype=torch.long)
    if padded:
        past_end = torch.arange(outputs[0].shape[0])[:, None] >= lengths.cpu()[None, :]  # (T, B)
        padding = past_end.reshape(-1).nonzero().squeeze(1).to(outputs[0].device)
    pooled: list[torch.Tensor] = []
    for out in outputs:  # contiguous when padded, ours to overwrite
        if padded:
            out.view(-1, out.shape[2]).index_fill_(0, padding, float("-inf") if use_max else 0.0)
        pooled.append(out.amax(dim=0) if use_max
                      else out.sum(dim=0) / lengths.to(out.device, out.dtype)[:, None])
    return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]


def encode_unpacked(lstm: nn.LSTM, x: torch.Tensor,
                     lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the packed LSTM returns for batch-first x (B, T, E), up to float rounding."""
    steps = x.shape[1]
    if int(lengths.min()) == steps:  # no padding at all (always so for one text): one call
        states, (h_n, _) = lstm(x)
        return states, h_n
    outputs, h_n, reverse = run_unpacked(unpacked_layers(lstm), lstm.bias, lstm.hidden_size,
                                         x.transpose(0, 1).contiguous(), lengths, True)
    assert h_n is not None
    if len(outputs) > 1:
        outputs[1] = select_rows(outputs[1], reverse)
    states = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]  # (T, B, H*D)
    padded = torch.arange(steps, device=x.device)[:, None] >= lengths.to(x.device)[None, :]
    return states.masked_fill(padded[:, :, None], 0.0).transpose(0, 1), h_n


def pooled_unpacked(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor,
                     use_max: bool) -> torch.Tensor:
    """Max or mean pooling of the unpacked last layer (see `pool_unpacked`)."""
    if int(lengths.min()) == x.shape[1]:  # no padding at all (always so for one text): one call
        return pool_unpacked([lstm(x)[0].transpose(0, 1)], lengths, use_max, padded=False)
    outputs, _, _ = run_unpacked(unpacked_layers(lstm), lstm.bias, lstm.hidden_size,
                                 x.transpose(0, 1).contiguous(), lengths, False)
    return pool_unpacked(outputs, lengths, use_max)

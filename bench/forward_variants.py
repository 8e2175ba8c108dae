"""Levers on the model forward that were tried and dropped: lower precision, int8, skipping padding.

    python -m bench.forward_variants [--model-dir artifacts/default] [--batch 32] [--compile]

Each variant runs the forward pass the service runs (ids -> probabilities) on the same batch of
30-word BBC test texts with one torch thread, as a worker does. Prints microseconds per text
(median of --repeat rounds, alternating), the ratio to the float32 forward the service uses,
and the largest probability difference from it. On the 2-core AVX-512 machine of the README
none is faster, which is why the service keeps float32 (see "Performance"). `--compile` adds
TorchScript (traced) and torch.compile (inductor; needs a C++ compiler, ~30 s to compile): the
LSTM is one oneDNN kernel either way, ~93 % of the time, so they can only touch the rest.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.common import request_texts
from bench.inprocess import timed_round
from model.network import LSTMClassifier
from model.tokenizer import pad
from model.unpacked import lstm_params, reversed_rows, select_rows
from service.predictor import Predictor

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ids, lengths -> (B, C) probs


def in_dtype(model: LSTMClassifier, dtype: torch.dtype) -> Forward:
    """The whole model (weights and activations) in `dtype`; oneDNN runs the LSTM in it."""
    low = copy.deepcopy(model).to(dtype)
    return lambda ids, lengths: low(ids, lengths).float().softmax(1)


def packed(model: LSTMClassifier, lstm: nn.Module) -> Forward:
    """The plain PyTorch way, with `lstm` in place of the model's: packed sequences, max pool."""

    def forward(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sequence = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True,
                                        enforce_sorted=False)
        states, _ = pad_packed_sequence(lstm(sequence)[0], batch_first=True,
                                        padding_value=float("-inf"))  # (B, T, H*D)
        return model.classifier(states.amax(1)).softmax(1)

    return forward


def int8_lstm(model: LSTMClassifier) -> Forward:
    """Dynamic int8 quantisation of the LSTM (torch.ao, deprecated in favour of torchao); the
    quantised module has no unpacked path, so it runs packed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # swaps children only: the LSTM goes in a container
        quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(model.lstm)),
                                                           {nn.LSTM})[0]
    return packed(model, quantized)


def time_segmented(model: LSTMClassifier, chunks: int) -> Forward:
    """Skip most padding: rows sorted longest first, the steps cut into `chunks` spans at length
    quantiles, each span one LSTM call on only the rows still running, from the state the
    previous span left (what packing does per step, here per span)."""
    lstm, hidden = model.lstm, model.config.hidden_size

    def direction(x: torch.Tensor, lengths: torch.Tensor, bounds: list[int], reverse: bool) -> torch.Tensor:
        params = lstm_params(lstm, 0, reverse)
        out = x.new_full((x.shape[0], x.shape[1], hidden), float("-inf"))  # (T, B, H)
        state: tuple[torch.Tensor, ...] = (x.new_zeros(1, x.shape[1], hidden),) * 2
        for start, stop in zip(bounds, bounds[1:], strict=False):
            rows = int((lengths > start).sum())
            part, *last = torch.lstm(x[start:stop, :rows], tuple(s[:, :rows] for s in state), params,
                                     lstm.bias, 1, 0.0, False, False, False)
            out[start:stop, :rows], state = part, tuple(last)
        padded = torch.arange(x.shape[0])[:, None] >= lengths[None, :]
        return out.masked_fill_(padded[:, :, None], float("-inf")).amax(0)  # (B, H) max pool

    def forward(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths, order = lengths.sort(descending=True)
        x = model.embedding(ids[order]).transpose(0, 1).contiguous()  # (T, B, E)
        marks = {int(lengths[int(len(lengths) * (1 - j / chunks)) - 1]) for j in range(1, chunks)}
        bounds = sorted({0, x.shape[0], *(m for m in marks if 0 < m < x.shape[0])})
        backward = select_rows(x, reversed_rows(lengths, x.shape[0]))
        features = torch.cat([direction(x, lengths, bounds, False),
                              direction(backward, lengths, bounds, True)], 1)
        return model.classifier(features[order.argsort()]).softmax(1)

    return forward


def traced(model: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> Forward:
    """TorchScript by tracing (scripting fails on the dataclass config); the trace keeps the
    branch this batch takes (unpacked), so it is only valid for batches like it."""
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning at each Python branch on a tensor
        scripted = torch.jit.trace(model, (ids, lengths), check_trace=False)
    return lambda i, n: scripted(i, n).softmax(1)


def compiled(model: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> Forward:
    """torch.compile (inductor, dynamic shapes); compiled on the first calls, timed here."""
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph-break warnings at int(lengths.sum())
    fn = torch.compile(model, dynamic=True)
    started = time.perf_counter()
    with torch.inference_mode():
        fn(ids, lengths)
        fn(ids[:-1], lengths[:-1])  # a second shape: the dynamic-shape graph, as a server would see
    print(f"torch.compile: first calls took {time.perf_counter() - started:.1f} s")
    return lambda i, n: fn(i, n).softmax(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per timed round")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per variant (median)")
    p.add_argument("--compile", action="store_true", help="add TorchScript and torch.compile")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    predictor = Predictor.load(args.model_dir, torch.device("cpu"))
    model = predictor.model
    texts = (request_texts(30) * (args.batch // 200 + 1))[: args.batch]
    ids, lengths = pad([predictor.encode(t)[: predictor.max_tokens] for t in texts])
    variants: dict[str, Forward] = {"float32 (served)": lambda i, n: model(i, n).softmax(1)}
    if model.config.num_layers == 1 and model.config.bidirectional and model.config.pooling == "max":
        variants |= {f"float32, padding skipped in {k} spans": time_segmented(model, k) for k in (2, 3)}
        variants["float32, packed (plain PyTorch)"] = packed(model, model.lstm)
        variants["int8 dynamic LSTM, packed"] = int8_lstm(model)
    variants |= {"bfloat16": in_dtype(model, torch.bfloat16), "float16": in_dtype(model, torch.float16)}
    if args.compile:
        variants["float32, TorchScript (traced)"] = traced(model, ids, lengths)
        variants["float32, torch.compile"] = compiled(model, ids, lengths)
    with torch.inference_mode():
        reference = variants["float32 (served)"](ids, lengths)
        rounds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):  # alternate, so a change in machine load hits all alike
            for name, fn in variants.items():
                calls, wall, _ = timed_round(partial(fn, ids, lengths), args.min_time)
                rounds[name].append(wall / calls / args.batch * 1e6)
        diffs = {name: float((fn(ids, lengths) - reference).abs().max()) for name, fn in variants.items()}
    base = statistics.median(rounds["float32 (served)"])
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch} of 30-word texts "
          f"({int(lengths.min())}-{int(lengths.max())} tokens), median of {args.repeat}")
    print("| variant | us per text | / float32 | max abs diff in probability |")
    print("|---|--:|--:|--:|")
    for name, values in rounds.items():
        us = statistics.median(values)
        print(f"| {name} | {us:.1f} | {us / base:.2f} | {diffs[name]:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

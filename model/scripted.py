"""The CPU inference pass of LSTMClassifier in TorchScript: padded ids -> probabilities, with no
Python and no GIL from start to end, so it can run beside a busy event loop.

Why: from Python, each of a pass's ~60 torch ops takes the GIL back when it returns. On a
thread beside the event loop every such re-take waits for the loop to let go (up to
`sys.getswitchinterval()`, 5 ms), so the thread and the loop took turns and one worker used one
core. A TorchScript pass takes the GIL only if it drops a reference to a tensor that Python has
seen (c10::TensorImpl::decref_pyobject, since torch 2.x), so `ScriptedClassifier` keeps its own
copies of the weights, made in TorchScript, and copies each pass's inputs on the way in.
`launch` runs the pass on torch's inter-op thread pool (`torch.jit.fork`) and returns a torch
Future at once; a pass launched `after` another starts when that one ends, without waiting for
the caller.

The computation is the model's own unpacked path, the same functions compiled
(model.unpacked: `run_unpacked`, `pool_unpacked`): both directions over time-major input, the
backward one on each text reversed within its length, padded steps overwritten before max or
mean pooling; then the output layer and softmax in float32, as service.predictor does. Same results
(tests/test_scripted.py). Only for max / mean pooling with little padding (`scripted_fits`);
`last` pooling, the packed path and other devices stay in Python.

Shapes: B batch, T time steps, E embedding dim, H hidden size, C classes.
"""

from __future__ import annotations

import functools
import warnings
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from model.network import UNPACKED_MIN_FILL, LSTMClassifier
from model.unpacked import pool_unpacked, run_unpacked, unpacked_layers

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # probabilities, logits (B, C), features


def _pooled(ids: torch.Tensor, lengths: torch.Tensor, embedding: torch.Tensor,
            layers: list[list[list[torch.Tensor]]], has_bias: bool, hidden: int,
            use_max: bool) -> torch.Tensor:
    """ids (B, T), lengths (B,) >= 1 -> pooled features (B, H*D) in the weights' dtype: the
    model's own unpacked path (model.unpacked.run_unpacked, pool_unpacked), compiled."""
    x = F.embedding(ids.t(), embedding)  # (T, B, E), time-major as the LSTM kernel works
    outputs, _, _ = run_unpacked(layers, has_bias, hidden, x, lengths, False)
    return pool_unpacked(outputs, lengths, use_max)


def _packed(params: list[torch.Tensor], has_bias: bool, hidden: int) -> list[torch.Tensor]:
    """One direction's weights in oneDNN's own layout, then its biases (zeros if it has none):
    the LSTM kernel reorders plain weights on every call, ~2-3 % of a pass (fp32 and bf16).
    Same results, bit for bit."""
    weights = torch.ops.mkldnn._reorder_mkldnn_rnn_layer_weight(params[0], params[1], hidden,
                                                                 False, has_bias, False)
    biases = [b.clone() for b in params[2:]] if has_bias else [
        params[0].new_zeros(params[0].shape[0]), params[0].new_zeros(params[0].shape[0])]
    return [weights[0], weights[1]] + biases


def _reorder_op_exists(namespace: object = torch.ops.mkldnn) -> bool:
    """Whether this torch has the private op `_packed` calls (torch 2.13 has; a later release
    may drop it, and `_Owned` would then fail to compile: the pass stays in Python instead)."""
    return hasattr(namespace, "_reorder_mkldnn_rnn_layer_weight")


@functools.cache
def _packing_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs the LSTM on packed weights of this dtype here (float16 has no
    oneDNN LSTM on most CPUs: torch.lstm then runs its own kernel, on plain weights)."""
    params = [torch.zeros(8, 1, dtype=dtype), torch.zeros(8, 2, dtype=dtype)]
    try:
        with torch.inference_mode():
            run_unpacked([[_packed(params, False, 2)]], False, 2, torch.zeros(1, 1, 1, dtype=dtype),
                         torch.ones(1, dtype=torch.long), False)
    except RuntimeError:
        return False
    return True


def scripted_fits(lengths: list[int]) -> bool:
    """Whether the scripted pass serves a bucket of texts of these lengths (>= 1) once padded:
    texts, and little padding (the model's own rule for its unpacked path,
    model.network.UNPACKED_MIN_FILL)."""
    return bool(lengths) and sum(lengths) >= UNPACKED_MIN_FILL * len(lengths) * max(lengths)


class _Owned(torch.nn.Module):
    """The pass over weights that only TorchScript has seen (see the module docstring)."""

    def __init__(self, has_bias: bool, hidden: int, use_max: bool) -> None:
        super().__init__()
        self.has_bias, self.hidden, self.use_max = has_bias, hidden, use_max
        # [layer][direction] -> w_ih, w_hh in oneDNN's layout and two biases (`_packed`), or
        # copies of torch.lstm's plain weights where packing does not work (`_packing_works`)
        self.layers = cast(list[list[list[torch.Tensor]]],
                           torch.jit.Attribute([], list[list[list[torch.Tensor]]]))
        self.embedding = self.out_weight = self.out_bias = torch.zeros(0)

    @torch.jit.export
    def own(self, layers: list[list[list[torch.Tensor]]], embedding: torch.Tensor,
            out_weight: torch.Tensor, out_bias: torch.Tensor, pack: bool) -> None:
        self.layers = [[_packed(direction, self.has_bias, self.hidden) if pack
                        else [w.clone() for w in direction] for direction in layer]
                       for layer in layers]
        self.embedding = embedding.clone()
        self.out_weight, self.out_bias = out_weight.float().clone(), out_bias.float().clone()

    def forward(self, ids: list[torch.Tensor], lengths: list[torch.Tensor],
                back: torch.Tensor | None) -> Outputs:
        """Buckets of texts (ids (b, T) and lengths (b,) each) -> outputs with rows in input
        order (`back`: rows of the concatenated buckets -> input order; None for one bucket)."""
        features = [_pooled(ids[k], lengths[k], self.embedding, self.layers, self.has_bias,
                            self.hidden, self.use_max) for k in range(len(ids))]
        pooled = features[0] if back is None else torch.cat(features).index_select(0, back)
        pooled = pooled.float()  # (B, H*D); the output layer in float32 whatever the dtype
        logits = F.linear(pooled, self.out_weight, self.out_bias)  # (B, C)
        return torch.softmax(logits, dim=1), logits, pooled

    @torch.jit.export
    def run(self, ids: list[torch.Tensor], lengths: list[torch.Tensor],
            back: torch.Tensor | None) -> Outputs:
        """`forward` on copies of the inputs made here, on the caller's thread."""
        return self.forward([i.clone() for i in ids], [n.clone() for n in lengths],
                            None if back is None else back.clone())

    @torch.jit.export
    def launch(self, ids: list[torch.Tensor], lengths: list[torch.Tensor],
               back: torch.Tensor | None,
               after: torch.jit.Future[Outputs] | None) -> torch.jit.Future[Outputs]:
        """`forward` on the inter-op pool, once `after` (if any) has ended."""
        return torch.jit.fork(self._after, after, [i.clone() for i in ids],
                              [n.clone() for n in lengths], None if back is None else back.clone())

    def _after(self, after: torch.jit.Future[Outputs] | None, ids: list[torch.Tensor],
               lengths: list[torch.Tensor], back: torch.Tensor | None) -> Outputs:
        if after is not None:
            torch.jit.wait(after)  # only the order: a failed earlier pass fails this one too
        return self.forward(ids, lengths, back)


class ScriptedClassifier:
    """The scripted pass bound to one model's weights (the LSTM and embedding in their dtype,
    the output layer float32), compiled when constructed."""

    def __init__(self, model: LSTMClassifier, output: torch.nn.Linear) -> None:
        lstm = model.lstm
        with warnings.catch_warnings():
            # deprecated in favour of torch.compile / torch.export, which have no way to run a
            # pass without the GIL from Python, and torch.compile takes tens of seconds (and a
            # C++ compiler) where scripting takes a fraction of one
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
            self.module = torch.jit.script(_Owned(lstm.bias, lstm.hidden_size,
                                                  model.config.pooling == "max"))
        with torch.no_grad():
            self.module.own(unpacked_layers(lstm), model.embedding.weight, output.weight,
                            output.bias, _packing_works(model.embedding.weight.dtype))

    @staticmethod
    def supports(model: LSTMClassifier) -> bool:
        return (model.config.pooling in ("max", "mean") and model.embedding.weight.device.type == "cpu"
                and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)
                and _reorder_op_exists())

    def run(self, ids: list[torch.Tensor], lengths: list[torch.Tensor],
            back: torch.Tensor | None) -> Outputs:
        return self.module.run(ids, lengths, back)

    def launch(self, ids: list[torch.Tensor], lengths: list[torch.Tensor],
               back: torch.Tensor | None, after: torch.futures.Future | None = None,
               ) -> torch.futures.Future:
        return self.module.launch(ids, lengths, back, after)

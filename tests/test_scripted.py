"""model/scripted.py: the TorchScript pass gives the model's own answers, on the calling thread
and launched on torch's inter-op threads, and works on weights of its own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from model import scripted
from model.network import LSTMClassifier, ModelConfig
from model.scripted import ScriptedClassifier, _packed, scripted_fits
from model.tokenizer import pad
from model.unpacked import run_unpacked, unpacked_layers
from service.predictor import Predictor

ENCODED = [[5, 6, 7, 8], [3, 4, 5, 6, 7, 8, 9], [9, 2, 11, 4, 4, 3], [12, 13, 14, 15, 16, 17, 18]]


def make(pooling="max", bidirectional=True, layers=1, seed=0) -> LSTMClassifier:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=20, num_classes=3, embedding_dim=5, hidden_size=4,
                         num_layers=layers, bidirectional=bidirectional, dropout=0.1,
                         pooling=pooling)
    return LSTMClassifier(config).eval()


def model_outputs(model: LSTMClassifier, encoded: list[list[int]]) -> tuple[torch.Tensor, ...]:
    ids, lengths = pad(encoded)
    with torch.inference_mode():
        features = model.features(ids, lengths)
        logits = model.classifier(features)
    return torch.softmax(logits, dim=1), logits, features


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_pass_gives_the_models_answer(pooling, bidirectional, layers):
    model = make(pooling, bidirectional, layers)
    scripted = ScriptedClassifier(model, model.classifier)
    ids, lengths = pad(ENCODED)
    with torch.inference_mode():
        got = scripted.run([ids], [lengths], None)
    for have, want in zip(got, model_outputs(model, ENCODED), strict=True):
        torch.testing.assert_close(have, want, atol=1e-6, rtol=0)
    assert got[0].sum(1).sub(1).abs().max() < 1e-6


def test_buckets_come_back_in_input_order():
    model = make()
    scripted = ScriptedClassifier(model, model.classifier)
    order = [1, 3, 0, 2]  # the buckets hold rows 1, 3 and 0, 2 of ENCODED
    first, second = pad([ENCODED[i] for i in order[:2]]), pad([ENCODED[i] for i in order[2:]])
    back = torch.tensor(order).argsort()
    with torch.inference_mode():
        probabilities, logits, features = scripted.run([first[0], second[0]],
                                                       [first[1], second[1]], back)
    for i, text in enumerate(ENCODED):
        alone = model_outputs(model, [text])
        torch.testing.assert_close(logits[i : i + 1], alone[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(features[i : i + 1], alone[2], atol=1e-6, rtol=0)


def test_a_launched_pass_gives_the_same_answer_and_one_after_it_too():
    model = make()
    scripted = ScriptedClassifier(model, model.classifier)
    ids, lengths = pad(ENCODED)
    with torch.inference_mode():
        want = scripted.run([ids], [lengths], None)
        first = scripted.launch([ids], [lengths], None)
        second = scripted.launch([ids[:2]], [lengths[:2]], None, after=first)
        got_second, got_first = second.wait(), first.wait()
    assert first.done() and second.done()
    for have, expected in zip(got_first, want, strict=True):
        assert torch.equal(have, expected)
    assert torch.equal(got_second[1], want[1][:2])


def test_low_precision_runs_in_that_dtype_with_a_float32_output_layer():
    model = make()
    low = ScriptedClassifier(LSTMClassifier(model.config).eval().to(torch.bfloat16), model.classifier)
    ids, lengths = pad(ENCODED)
    with torch.inference_mode():
        probabilities, logits, features = low.run([ids], [lengths], None)
    assert probabilities.dtype == logits.dtype == features.dtype == torch.float32
    assert low.module.embedding.dtype == torch.bfloat16


def test_the_weights_are_copies_of_its_own():
    """Tensors Python has seen take the GIL when TorchScript drops a reference to them."""
    model = make()
    scripted = ScriptedClassifier(model, model.classifier)
    module = scripted.module
    assert module.embedding.data_ptr() != model.embedding.weight.data_ptr()
    assert torch.equal(module.embedding, model.embedding.weight)
    directions = [direction for layer in module.layers for direction in layer]
    assert len(directions) == 2 and all(len(d) == 4 for d in directions)  # w_ih, w_hh, 2 biases
    # the weights in oneDNN's layout (no storage Python could share), the biases copies
    assert all(w.is_mkldnn for d in directions for w in d[:2])
    biases = {b.data_ptr() for d in directions for b in d[2:]}
    assert len(biases) == 4 and not biases & {p.data_ptr() for p in model.lstm.parameters()}


def test_which_models_and_batches_it_serves():
    assert ScriptedClassifier.supports(make("max")) and ScriptedClassifier.supports(make("mean"))
    assert not ScriptedClassifier.supports(make("last"))
    assert scripted_fits([10, 10]) and scripted_fits([10, 4])  # 14 of 20 padded steps are tokens
    assert not scripted_fits([10, 3]) and not scripted_fits([])


def test_without_the_weight_packing_op_the_pass_stays_in_python(monkeypatch):
    """A torch without the private op (see `_reorder_op_exists`): not supported, rather than a
    failure to compile when the service loads the model; the Python path then answers."""
    assert scripted._reorder_op_exists() and not scripted._reorder_op_exists(object())
    monkeypatch.setattr(scripted, "_reorder_op_exists", lambda: False)
    model = make("max")
    assert not ScriptedClassifier.supports(model)
    artifact = SimpleNamespace(model=model, vocab=None, labels=["a", "b", "c"], max_length=64)
    predictor = Predictor(artifact, torch.device("cpu"))  # type: ignore[arg-type]
    assert predictor.scripted is None
    got = predictor.run_batch(ENCODED)
    want = model_outputs(model, ENCODED)[0]
    assert torch.allclose(torch.tensor(got.probabilities), want, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_weights_give_the_plain_kernels_answer(bias, dtype):
    """run_unpacked over weights in oneDNN's layout (biases added as zeros when the LSTM has
    none) gives what torch.lstm gives over the plain weights, bit for bit."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True, bias=bias).to(dtype)
    plain = unpacked_layers(lstm)
    with torch.inference_mode():
        packed = [[_packed(d, bias, 4) for d in layer] for layer in plain]
        x = torch.randn(7, 3, 5).to(dtype)
        lengths = torch.tensor([7, 4, 2])
        want, _, _ = run_unpacked(plain, bias, 4, x, lengths, False)
        got, _, _ = run_unpacked(packed, bias, 4, x, lengths, False)
    assert all(w.is_mkldnn for layer in packed for d in layer for w in d[:2])
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))

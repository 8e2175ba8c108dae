"""The Predictor's precision (TEXTCLF_DTYPE): batches in bfloat16 or float16, everything else in
float32; and the CPU checks that tell whether a precision is native or emulated."""

from __future__ import annotations

import pytest
import torch
from conftest import sample
from fastapi.testclient import TestClient

from model.artifact import Artifact
from model.device import DTYPES, native_dtype
from service.predictor import Predictor

TEXTS = ["the film was really good", "a terrible awful plot", "this story was nice",
         "I hate it, the movie was poor", "excellent, I love this film"]


def predictor(artifact: Artifact, dtype: torch.dtype) -> Predictor:
    return Predictor(artifact, torch.device("cpu"), dtype=dtype)


def test_float32_serves_the_artifact_model_itself(toy_artifact):
    fp32 = predictor(toy_artifact, torch.float32)
    assert fp32.forward_model is fp32.model
    assert fp32.info()["dtype"] == "float32"


def test_an_empty_batch_gives_empty_output(toy_artifact):
    output = predictor(toy_artifact, torch.float32).run_batch([])
    assert output.probabilities == [] and output.logits == [] and output.features.shape[0] == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_batches_give_the_float32_answer_closely(toy_artifact, dtype):
    fp32, low = predictor(toy_artifact, torch.float32), predictor(toy_artifact, dtype)
    encoded = [fp32.encode(text) for text in TEXTS]
    want, got = fp32.run_batch(encoded), low.run_batch(encoded)
    assert {p.dtype for p in low.forward_model.parameters()} == {dtype}
    assert low.info()["dtype"] == str(dtype).removeprefix("torch.")
    # float32 out (softmax in float32), rows still summing to one, same labels
    diff = (torch.tensor(got.probabilities) - torch.tensor(want.probabilities)).abs().max()
    assert 0 < diff < 2e-2  # it did run in the lower precision, and stayed close
    assert torch.tensor(got.probabilities).sum(1).sub(1).abs().max() < 1e-5
    assert (torch.tensor(got.probabilities).argmax(1) == torch.tensor(want.probabilities).argmax(1)).all()
    assert got.features.dtype == torch.float32


def test_low_precision_leaves_the_float32_weights_alone(toy_artifact):
    before = {k: v.clone() for k, v in toy_artifact.model.state_dict().items()}
    low = predictor(toy_artifact, torch.bfloat16)
    assert low.model is toy_artifact.model
    assert all(v.dtype == torch.float32 for v in low.model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in low.model.state_dict().items())
    # word vectors come from the float32 embedding, exactly
    row = low.word_vectors(["good"], normalize=False, neighbors=0)[0]
    assert row["vector"] == toy_artifact.model.embedding.weight[row["id"]].tolist()


def test_the_service_reports_and_uses_its_dtype(settings_factory, registry):
    from service.main import create_app

    with TestClient(create_app(settings_factory(dtype="bfloat16"), registry)) as client:
        info = client.get("/info").json()
        reply = client.post("/predict", json={"inputs": "the team won the cup final"})
    assert info["dtype"] == "bfloat16"
    assert reply.status_code == 200
    assert abs(sum(item["score"] for item in reply.json()) - 1) < 1e-5
    assert sample(registry, "textclf_model_info", version=info["model_version"], device="cpu",
                  dtype="bfloat16") == 1


def test_an_emulated_precision_is_served_with_a_warning(settings_factory, registry, caplog,
                                                       monkeypatch):
    from service import state
    from service.main import create_app

    monkeypatch.setattr(state, "native_dtype", lambda dtype, device: False)
    with TestClient(create_app(settings_factory(dtype="float16"), registry)) as client:
        assert client.post("/predict", json={"inputs": "shares fell"}).status_code == 200
    assert "TEXTCLF_DTYPE=float16" in caplog.text and "emulated" in caplog.text


def test_dtype_names_are_the_settings_choices():
    from service.config import Settings

    assert set(DTYPES) == set(Settings.model_fields["dtype"].annotation.__args__)


def test_native_precision_on_the_cpu_follows_the_isa(monkeypatch):
    cpu = torch.device("cpu")
    assert native_dtype(torch.float32, cpu)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not native_dtype(torch.bfloat16, cpu) and not native_dtype(torch.float16, cpu)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert native_dtype(torch.bfloat16, cpu) and not native_dtype(torch.float16, cpu)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert native_dtype(torch.float16, cpu)
    monkeypatch.delattr(torch.cpu, "_is_amx_fp16_supported")
    assert not native_dtype(torch.float16, cpu)  # an older torch without the probe


def test_native_precision_on_cuda(monkeypatch):
    gpu = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert native_dtype(torch.float16, gpu) and not native_dtype(torch.bfloat16, gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert native_dtype(torch.bfloat16, gpu)

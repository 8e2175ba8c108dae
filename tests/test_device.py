"""Device selection logic, on the CPU; the GPU test runs only where CUDA exists."""

import pytest
import torch

from model.device import DeviceError, available_devices, resolve_device


def test_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert available_devices() == ["cpu"]


def test_auto_takes_the_first_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device(" CUDA:1 ") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match=r"'cuda:2' is not available \(available: cpu, cuda:0, cuda:1\)"):
        resolve_device("cuda:2")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"not available \(available: cpu\)"):
        resolve_device("cuda")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "tpu", "cuda:x", ""])
def test_malformed_specs(spec):
    with pytest.raises(DeviceError, match="not one of"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_runs_on_the_gpu(settings_factory, registry):
    from fastapi.testclient import TestClient

    from service.main import create_app

    last = f"cuda:{torch.cuda.device_count() - 1}"
    with TestClient(create_app(settings_factory(device=last), registry)) as client:
        assert client.get("/info").json()["device"] == last
        assert client.post("/predict", json={"inputs": "goal"}).status_code == 200


@pytest.mark.parametrize(("setting", "device", "scripted", "workers", "expected"), [
    (None, "cpu", False, 1, "auto"), (None, "cuda", False, 1, "thread"),
    (None, "cuda:1", False, 1, "thread"), (True, "cpu", True, 2, "thread"),
    (False, "cuda", False, 1, "loop"), (False, "cpu", True, 1, "loop"),
    (None, "cpu", True, 1, "overlap"),  # 2 cores, 1 worker: one to spare
    (None, "cpu", True, 2, "auto")])  # 2 cores, 2 workers: none
def test_where_forward_passes_run(setting, device, scripted, workers, expected):
    from service.config import Settings
    from service.state import forward_placement

    settings = Settings(model_dir="unused", inference_thread=setting, workers=workers)
    assert forward_placement(settings, torch.device(device), scripted, cores=2) == expected


def test_the_spare_core_count_comes_from_the_cpus_the_process_may_use(monkeypatch):
    from service.config import Settings
    from service.state import forward_placement

    settings = Settings(model_dir="unused", workers=2)
    monkeypatch.setattr("service.cpus.cpu_quota", lambda *_: None)  # whatever runs the tests
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    assert forward_placement(settings, torch.device("cpu"), scripted=True) == "overlap"
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert forward_placement(settings, torch.device("cpu"), scripted=True) == "auto"
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("service.cpus.cpu_quota", lambda *_: 2.0)  # a container's CPU limit
    assert forward_placement(settings, torch.device("cpu"), scripted=True) == "auto"

"""`python -m service` refuses bad configuration before it listens: exit 2, one line."""

import os
import subprocess
import sys
import time

import httpx
import pytest

from bench.common import free_port


def run_service(env_overrides, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTCLF_")} | env_overrides
    return subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(("env", "expected"), [
    ({"TEXTCLF_PORT": "99999"}, "TEXTCLF_PORT"),
    ({"TEXTCLF_MAX_BATCH_SIZE": "zero"}, "TEXTCLF_MAX_BATCH_SIZE"),
    ({"TEXTCLF_DEVICE": "gpu"}, "TEXTCLF_DEVICE"),
    ({"TEXTCLF_LOG_FORMAT": "xml"}, "TEXTCLF_LOG_FORMAT"),
    ({"TEXTCLF_DTYPE": "int8"}, "TEXTCLF_DTYPE"),
])
def test_invalid_settings_exit_2_with_one_line(env, expected, artifact_dir):
    run = run_service({"TEXTCLF_MODEL_DIR": str(artifact_dir), **env})
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


def test_missing_cuda_device_names_what_is_available(artifact_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the missing-device path is covered in test_device")
    run = run_service({"TEXTCLF_MODEL_DIR": str(artifact_dir), "TEXTCLF_DEVICE": "cuda:1"})
    assert run.returncode == 2
    assert "TEXTCLF_DEVICE" in run.stderr and "available: cpu" in run.stderr


def test_missing_or_corrupt_model(tmp_path, artifact_dir):
    missing = run_service({"TEXTCLF_MODEL_DIR": str(tmp_path / "none")})
    assert missing.returncode == 2 and "TEXTCLF_MODEL_DIR" in missing.stderr
    (artifact_dir / "model.safetensors").write_bytes(b"corrupt")
    corrupt = run_service({"TEXTCLF_MODEL_DIR": str(artifact_dir)})
    assert corrupt.returncode == 2
    assert "model.safetensors" in corrupt.stderr and len(corrupt.stderr.strip().splitlines()) == 1


def test_serves_then_stops_on_sigterm(artifact_dir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTCLF_")} | {
        "TEXTCLF_MODEL_DIR": str(artifact_dir), "TEXTCLF_PORT": str(port),
        "TEXTCLF_HOST": "127.0.0.1", "TEXTCLF_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        reply = httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "goal"}, timeout=5)
        assert reply.status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert '"level": "info"' in stderr  # TEXTCLF_LOG_FORMAT=json


def test_the_loaded_heap_is_frozen_out_of_the_cyclic_gc(client):
    """After start-up the model, torch and the app are in the permanent generation
    (service.state.settle_heap): full collections under load no longer walk them."""
    import gc

    assert client.get("/health/ready").status_code == 200
    assert gc.get_freeze_count() > 10_000

"""Hot reload (POST /admin/reload, SIGHUP) and artifact integrity, at start and on reload.

A reload loads TEXTCLF_MODEL_DIR again, checks it (sha256, config / vocabulary / weights fit,
warm-up forward pass) and swaps it in; requests in flight finish on the old model. A bad
artifact is refused with 409 `invalid_artifact` naming the file, and the old model keeps
serving. Nothing on the load path unpickles.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import build_artifact, sample
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from bench.live import LiveService
from model.artifact import save_artifact
from model.network import LSTMClassifier, ModelConfig
from model.tokenizer import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
KEY = "reload-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "the team won the cup final"




# ----------------------------------------------------------------------------- corruptions

def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _write_config(path: Path, config: dict) -> None:
    (path / "config.json").write_text(json.dumps(config, indent=2))


def _flip_byte(path: Path) -> None:
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _rehash_weights(path: Path) -> None:
    """Make config.json's sha256 match whatever model.safetensors now holds (a consistent-looking
    artifact whose content is wrong: only the later checks can catch it)."""
    import hashlib

    config = _config(path)
    config["weights"]["sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    _write_config(path, config)


def _mismatched_weights(path: Path) -> None:
    """Weights of a model with another hidden size, with a matching sha256."""
    vocab = Vocabulary.from_json(json.loads((path / "vocab.json").read_text()))
    other = path.parent / "other"
    save_artifact(other, LSTMClassifier(ModelConfig(vocab_size=len(vocab), num_classes=3,
                                                    embedding_dim=8, hidden_size=7)),
                  vocab, ["a", "b", "c"], name="other", max_length=16)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    _rehash_weights(path)


def _pickle_weights(path: Path) -> None:
    """A torch.save (pickle) file in place of the safetensors one, sha256 matching: must be
    refused as not safetensors, never unpickled."""
    torch.save({"embedding.weight": torch.zeros(2, 2)}, path / "model.safetensors")
    _rehash_weights(path)


def _tamper_vocab(path: Path) -> None:
    vocab = json.loads((path / "vocab.json").read_text())
    vocab["words"].append("intruder")
    vocab["counts"].append(1)
    (path / "vocab.json").write_text(json.dumps(vocab))


def _vocab_size_mismatch(path: Path) -> None:
    import hashlib

    _tamper_vocab(path)
    config = _config(path)
    config["tokenizer"]["vocab_sha256"] = hashlib.sha256((path / "vocab.json").read_bytes()).hexdigest()
    _write_config(path, config)


def _config_not_json(path: Path) -> None:
    (path / "config.json").write_text('{"format": "textclf-artifact", "version": ')


def _labels_mismatch(path: Path) -> None:
    config = _config(path)
    config["labels"] = config["labels"][:2]
    _write_config(path, config)


def _weights_missing(path: Path) -> None:
    (path / "model.safetensors").unlink()


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (damage, file the error must name, words it must contain)
    "weights_flipped_byte": (_flip_byte, "model.safetensors", "sha256"),
    "weights_truncated": (_truncate, "model.safetensors", "sha256"),
    "weights_wrong_shape": (_mismatched_weights, "model.safetensors", "do not fit"),
    "weights_pickle": (_pickle_weights, "model.safetensors", "not a safetensors"),
    "weights_missing": (_weights_missing, "model.safetensors", "missing"),
    "vocab_tampered": (_tamper_vocab, "vocab.json", "sha256"),
    "vocab_size_mismatch": (_vocab_size_mismatch, "vocab.json", "vocab_size"),
    "config_not_json": (_config_not_json, "config.json", "JSON"),
    "labels_mismatch": (_labels_mismatch, "config.json", "num_classes"),
}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """TEXTCLF_MODEL_DIR as a symlink to a version directory: the way to update it atomically."""
    build_artifact(tmp_path / "v1", seed=0)
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    return link


def point(link: Path, target: Path) -> None:
    """Swap the symlink in one rename, so a reload never sees half an artifact."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


@pytest.fixture
def reload_client(model_dir: Path, registry: CollectorRegistry) -> Iterator[TestClient]:
    from service.config import Settings
    from service.main import create_app

    settings = Settings(model_dir=model_dir, device="cpu", api_key=KEY)
    with TestClient(create_app(settings, registry)) as client:
        yield client


def _version(client: TestClient) -> str:
    return client.get("/info", headers=AUTH).json()["model_version"]


def _assert_error(response: object, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "error_type"}, body
    assert body["error_type"] == error_type
    return body


# ----------------------------------------------------------------------------- the endpoint

def test_reload_endpoint_is_404_without_an_api_key(client: TestClient) -> None:
    body = _assert_error(client.post("/admin/reload"), 404, "not_found")
    assert "TEXTCLF_API_KEY" in body["error"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": KEY}])
def test_reload_needs_the_key(reload_client: TestClient, headers: dict) -> None:
    response = reload_client.post("/admin/reload", headers=headers)
    _assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, AUTH])
def test_reload_same_artifact_ok(reload_client: TestClient, headers: dict) -> None:
    before = _version(reload_client)
    response = reload_client.post("/admin/reload", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "reloaded"
    assert body["model_version"] == body["previous_version"] == before


def test_reload_swaps_model_info_and_metrics(reload_client: TestClient, model_dir: Path,
                                             registry: CollectorRegistry) -> None:
    old = reload_client.get("/info", headers=AUTH).json()
    old_scores = reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).json()
    new_dir = build_artifact(model_dir.parent / "v2", seed=1)
    point(model_dir, new_dir)

    response = reload_client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    new = reload_client.get("/info", headers=AUTH).json()
    assert body["previous_version"] == old["model_version"]
    assert body["model_version"] == new["model_version"] == _config(new_dir)["version"]
    assert new["model_version"] != old["model_version"]
    assert new["weights_sha256"] == body["weights_sha256"] != old["weights_sha256"]
    assert reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).json() != old_scores
    assert reload_client.get("/health/ready").json()["model_version"] == new["model_version"]

    assert sample(registry, "textclf_model_info", version=new["model_version"], device="cpu") == 1
    assert registry.get_sample_value("textclf_model_info",
                                     {"version": old["model_version"], "device": "cpu"}) is None
    assert sample(registry, "textclf_model_reloads_total", result="success") == 1
    metrics = reload_client.get("/metrics").text
    assert f'textclf_model_info{{device="cpu",version="{new["model_version"]}"}} 1.0' in metrics


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_bad_artifact_refused_old_model_keeps_serving(reload_client: TestClient, model_dir: Path,
                                                      registry: CollectorRegistry,
                                                      corruption: str) -> None:
    damage, named_file, words = CORRUPTIONS[corruption]
    before = reload_client.get("/info", headers=AUTH).json()
    scores = reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).json()
    damage(Path(os.path.realpath(model_dir)))

    body = _assert_error(reload_client.post("/admin/reload", headers=AUTH), 409, "invalid_artifact")
    assert named_file in body["error"] and words in body["error"], body
    assert "TEXTCLF_MODEL_DIR" in body["error"] and before["model_version"] in body["error"]
    assert reload_client.get("/info", headers=AUTH).json() == before
    assert reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).json() == scores
    assert reload_client.get("/health/ready").status_code == 200
    assert sample(registry, "textclf_model_reloads_total", result="failure") == 1
    assert sample(registry, "textclf_model_info", version=before["model_version"], device="cpu") == 1


def test_old_model_is_released_after_reload(reload_client: TestClient) -> None:
    """No leak across reloads: once swapped out and drained, the old predictor is freed."""
    state = reload_client.app.state.textclf  # type: ignore[attr-defined]
    old = weakref.ref(state.serving.predictor)
    assert reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).status_code == 200
    assert reload_client.post("/admin/reload", headers=AUTH).status_code == 200
    for _ in range(3):
        gc.collect()
    assert old() is None


def test_in_flight_request_finishes_on_the_old_model(reload_client: TestClient,
                                                     model_dir: Path) -> None:
    """Deterministic: a request holding the old model keeps it working through a swap; the old
    batcher closes only once that request lets go."""
    state = reload_client.app.state.textclf  # type: ignore[attr-defined]
    point(model_dir, build_artifact(model_dir.parent / "v2", seed=1))

    async def scenario() -> tuple[str, str, bool, bool]:
        with state.use() as old:
            reload = asyncio.create_task(state.reload())
            for _ in range(1000):  # until swapped (load + warm-up run in a thread)
                if state.serving is not old:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            waiting = not reload.done()
            result = await old.batcher.submit([old.predictor.encode(TEXT)])  # still works
            assert len(result.output.probabilities) == 1
            old_version = old.predictor.version
        await asyncio.wait_for(reload, 10)
        return old_version, reload.result().version, waiting, old.batcher._closing

    old_version, new_version, waited, closed = reload_client.portal.call(scenario)  # type: ignore[union-attr]
    assert old_version != new_version
    assert waited, "reload must wait for requests still on the old model"
    assert closed, "the old batcher is closed once its last request is done"


# ----------------------------------------------------------------------------- live server

@pytest.mark.integration
def test_reload_under_load_zero_failures(tmp_path: Path) -> None:
    """Threads send /predict non-stop to a live server while it is reloaded 6 times (two
    artifacts, alternately) and once refused (bad artifact): every request answers 200, with
    the scores of one model or the other, never a mix."""
    dirs = [build_artifact(tmp_path / f"v{i}", seed=i, max_length=64) for i in (1, 2)]
    bad = build_artifact(tmp_path / "bad", seed=3)
    _flip_byte(bad)
    link = tmp_path / "current"
    link.symlink_to(dirs[0])
    # over 50,000 characters in all: tokenized in a worker thread, which widens the window
    # between a request taking the model and submitting to its batcher (where a swap lands)
    texts = [TEXT, "shares fell as the market closed"] + ["the new phone has a faster chip " * 600] * 3
    body = json.dumps({"inputs": texts}).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}

    with LiveService(link, api_key=KEY, max_batch_delay_ms=5,
                     max_queue_size=100_000) as live:
        answers: dict[str, list] = {}
        for i, target in enumerate(dirs * 2):  # learn each model's answer
            point(link, target)
            assert live.request("POST", "/admin/reload", headers=headers)[0] == 200
            answers.setdefault(str(i % 2), json.loads(live.request("POST", "/predict", body,
                                                                   headers)[2]))
        point(link, dirs[0])
        assert live.request("POST", "/admin/reload", headers=headers)[0] == 200

        stop = threading.Event()
        results: list[tuple[int, bytes]] = []
        errors: list[str] = []

        def hammer() -> None:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
            while not stop.is_set():
                try:
                    conn.request("POST", "/predict", body=body, headers=headers)
                    response = conn.getresponse()
                    results.append((response.status, response.read()))
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
            conn.close()

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        reloads = []
        try:
            for i in range(7):
                time.sleep(0.3)
                if i == 3:
                    point(link, bad)
                    reloads.append(live.request("POST", "/admin/reload", headers=headers)[0])
                    point(link, dirs[0])
                else:
                    point(link, dirs[(i + 1) % 2])
                    reloads.append(live.request("POST", "/admin/reload", headers=headers)[0])
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        print(f"\n{len(results)} /predict during 7 reloads {reloads}: "
              f"{sum(s == 200 for s, _ in results)} x 200, {len(errors)} errors")
        assert reloads == [200, 200, 200, 409, 200, 200, 200]
        assert not errors, errors[:5]
        statuses = {status for status, _ in results}
        assert statuses == {200}, [r for r in results if r[0] != 200][:5]
        assert len(results) > 50
        known = list(answers.values())
        for _, raw in results:
            got = json.loads(raw)
            assert any(_close(got, expected) for expected in known), got
        assert "Traceback" not in live.log()


def _close(got: list, expected: list) -> bool:
    """Same labels in the same order, scores within float noise (batch composition varies)."""
    return all([a["label"] for a in x] == [b["label"] for b in y]
               and all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(x, y, strict=True))
               for x, y in zip(got, expected, strict=True))


@pytest.mark.integration
def test_sighup_reloads_and_refuses_bad_artifact(tmp_path: Path) -> None:
    v1, v2 = (build_artifact(tmp_path / f"v{i}", seed=i) for i in (1, 2))
    bad = build_artifact(tmp_path / "bad", seed=3)
    _tamper_vocab(bad)
    link = tmp_path / "current"
    link.symlink_to(v1)
    with LiveService(link) as live:
        info = lambda: json.loads(live.request("GET", "/info")[2])  # noqa: E731
        assert info()["model_version"] == _config(v1)["version"]

        point(link, v2)
        live.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while info()["model_version"] != _config(v2)["version"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info()["model_version"] == _config(v2)["version"]
        assert f'version="{_config(v2)["version"]}"' in live.request("GET", "/metrics")[2].decode()

        point(link, bad)
        live.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload refused" not in live.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"reload refused, still serving \S+: .*vocab\.json: sha256", live.log())
        assert info()["model_version"] == _config(v2)["version"]
        assert live.request("GET", "/health/ready")[0] == 200
        assert live.proc.poll() is None  # type: ignore[union-attr]
        assert live.stop() == 0


# ----------------------------------------------------------------------------- at start

@pytest.mark.integration
def test_bad_artifact_at_start_exits_with_one_line(tmp_path: Path) -> None:
    """`python -m service` refuses a bad artifact before opening the port: status 2 and one
    line naming TEXTCLF_MODEL_DIR and the file. Two cases, side by side (each start imports
    torch); every kind of damage is covered in-process by the reload tests, same loader."""
    cases = ["weights_truncated", "vocab_size_mismatch"]
    runs = {}
    for corruption in cases:
        path = build_artifact(tmp_path / corruption / "artifact")
        CORRUPTIONS[corruption][0](path)
        env = {**os.environ, "TEXTCLF_MODEL_DIR": str(path), "TEXTCLF_DEVICE": "cpu",
               "TEXTCLF_HOST": "127.0.0.1", "TEXTCLF_PORT": "1",  # never opened
               "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
        runs[corruption] = (path, subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT,
                                                   env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, text=True))
    for corruption, (path, proc) in runs.items():
        _, stderr = proc.communicate(timeout=60)
        _, named_file, words = CORRUPTIONS[corruption]
        assert proc.returncode == 2, (corruption, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (corruption, stderr)
        assert lines[0].startswith("textclf: TEXTCLF_MODEL_DIR: ")
        assert str(path / named_file) in lines[0] and words in lines[0], lines[0]


# ----------------------------------------------------------------------------- no pickle

def test_nothing_on_the_load_path_unpickles() -> None:
    """Weights are safetensors and JSON only: no pickle, no torch.load without weights_only."""
    offenders = []
    for package in ("model", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for lineno, line in enumerate(source.splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(r"\b(import\s+pickle|from\s+pickle|pickle\.|cPickle|dill|joblib)\b",
                             code) or "allow_pickle=True" in code:  # np.load refuses by default
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
            for call in re.finditer(r"(?<![\w.])torch\.load\(", source):  # not safetensors.torch
                args = source[call.end(): source.find(")", call.end()) + 1]
                if "weights_only=True" not in args:
                    lineno = source.count("\n", 0, call.start()) + 1
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: torch.load without "
                                     "weights_only=True")
    assert not offenders, "\n".join(offenders)

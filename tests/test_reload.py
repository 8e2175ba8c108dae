"""Hot reload through POST /admin/reload, in process: the key, the swap, refusals of bad
artifacts, release of the old model, requests in flight. The live-server side (under load,
SIGHUP, a bad artifact at start) is in test_reload_live.py.

A reload loads TEXTCLF_MODEL_DIR again, checks it (sha256, config / vocabulary / weights fit,
warm-up forward pass) and swaps it in; requests in flight finish on the old model. A bad
artifact is refused with 409 `invalid_artifact` naming the file, and the old model keeps
serving.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifact_damage import CORRUPTIONS, config_of, point
from conftest import build_artifact, sample
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

KEY = "reload-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "the team won the cup final"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """TEXTCLF_MODEL_DIR as a symlink to a version directory: the way to update it atomically."""
    build_artifact(tmp_path / "v1", seed=0)
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    return link


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
    assert body["model_version"] == new["model_version"] == config_of(new_dir)["version"]
    assert new["model_version"] != old["model_version"]
    assert new["weights_sha256"] == body["weights_sha256"] != old["weights_sha256"]
    assert reload_client.post("/predict", json={"inputs": TEXT}, headers=AUTH).json() != old_scores
    assert reload_client.get("/health/ready").json()["model_version"] == new["model_version"]

    assert sample(registry, "textclf_model_info", version=new["model_version"], device="cpu",
                  dtype="float32") == 1
    assert registry.get_sample_value("textclf_model_info",
                                     {"version": old["model_version"], "device": "cpu",
                                      "dtype": "float32"}) is None
    assert sample(registry, "textclf_model_reloads_total", result="success") == 1
    metrics = reload_client.get("/metrics").text
    labels = f'device="cpu",dtype="float32",version="{new["model_version"]}"'
    assert f"textclf_model_info{{{labels}}} 1.0" in metrics


def test_a_reloaded_model_keeps_the_configured_dtype(model_dir: Path,
                                                  registry: CollectorRegistry) -> None:
    from service.config import Settings
    from service.main import create_app

    settings = Settings(model_dir=model_dir, device="cpu", api_key=KEY, dtype="bfloat16")
    with TestClient(create_app(settings, registry)) as client:
        point(model_dir, build_artifact(model_dir.parent / "v2", seed=1))
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
        new = client.get("/info", headers=AUTH).json()
        assert client.post("/predict", json={"inputs": TEXT}, headers=AUTH).status_code == 200
    assert new["dtype"] == "bfloat16"
    assert sample(registry, "textclf_model_info", version=new["model_version"], device="cpu",
                  dtype="bfloat16") == 1


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
    assert sample(registry, "textclf_model_info", version=before["model_version"],
                  device="cpu", dtype="float32") == 1


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

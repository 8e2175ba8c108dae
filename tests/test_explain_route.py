"""POST /explain through TestClient(create_app(...)) on the conftest's tiny artifact."""

from __future__ import annotations

import asyncio
import math

import pytest
from fastapi.testclient import TestClient

import service.explain_route as explain_route
from service.errors import ServiceError
from service.main import create_app
from tests.conftest import LABELS, sample

TEXT = "The team won the cup, zebra!"


def test_explain_matches_predict(client: TestClient) -> None:
    reply = client.post("/explain", json={"inputs": TEXT})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    predicted = client.post("/predict", json={"inputs": TEXT}).json()
    assert body["label"] == body["target"] == predicted[0]["label"]
    assert [p["label"] for p in body["probabilities"]] == [p["label"] for p in predicted]
    for mine, theirs in zip(body["probabilities"], predicted, strict=True):
        assert math.isclose(mine["score"], theirs["score"], rel_tol=1e-5)
    assert body["method"] == "integrated_gradients" and body["model_version"]
    done = body["completeness"]
    assert done["abs_error"] < 1e-2 * max(1.0, abs(done["score_difference"]))
    assert [t["text"] for t in body["tokens"]] == ["the", "team", "won", "the", "cup", ",",
                                                   "zebra", "!"]
    for token in body["tokens"]:
        assert TEXT[token["start"]: token["stop"]].lower() == token["text"]
        assert [(g["layer"], g["direction"]) for g in token["gates"]] == [(0, "forward"),
                                                                          (0, "backward")]
        assert "hidden" not in token["gates"][0]
    assert body["tokens"][6]["unk"]
    assert reply.headers["x-request-id"]


def test_occlusion_target_and_detail(client: TestClient) -> None:
    body = client.post("/explain", json={"inputs": "shares fell", "target": "tech",
                                         "method": "occlusion", "detail": True}).json()
    assert body["target"] == "tech" and body["method"] == "occlusion"
    assert "completeness" not in body
    gates = body["tokens"][0]["gates"][0]
    assert all(len(gates[k]) == 6 for k in ("input", "forget", "output", "candidate", "cell",
                                            "hidden"))


@pytest.mark.parametrize(("payload", "status", "kind", "message"), [
    ({"inputs": "goal", "target": "weather"}, 422, "validation",
     "labels are: business, sport, tech"),
    ({"inputs": "goal", "method": "lime"}, 422, "validation", "method"),
    ({"inputs": "goal", "steps": 10}, 422, "validation", "steps"),  # not a request field
    ({"inputs": ["goal"]}, 422, "validation", "inputs"),
    ({"inputs": "a b c d e f g h i j k l"}, 422, "validation", "12 tokens, more than the 10"),
    ({"inputs": " ".join("abcdefghijklmnopqrstuvwxyz")}, 422, "validation",
     "16 tokens, more than the 10"),  # counted after the cut to the model's 16
    ({"inputs": ""}, 400, "empty", "empty"),
    ({"inputs": " \n "}, 400, "empty", "empty"),
    ({"inputs": "x" * 1001}, 413, "payload_too_large", "1001 characters"),
])
def test_refusals(settings_factory, registry, payload: dict, status: int, kind: str,
                  message: str) -> None:
    settings = settings_factory(max_explain_tokens=10, max_input_chars=1000)
    with TestClient(create_app(settings, registry)) as client:
        reply = client.post("/explain", json=payload)
    assert reply.status_code == status
    body = reply.json()
    assert body["error_type"] == kind and message in body["error"]
    assert set(body) == {"error", "error_type"}


def test_tokens_are_cut_to_the_served_limit_first(settings_factory, registry) -> None:
    """The fixture model reads 16 tokens; /explain explains what /predict classifies."""
    with TestClient(create_app(settings_factory(max_explain_tokens=16), registry)) as client:
        body = client.post("/explain", json={"inputs": " ".join(["goal"] * 40)}).json()
    assert body["num_tokens"] == 16 and body["truncated"]


def test_request_metrics_and_no_batcher(client: TestClient, registry) -> None:
    batches = sample(registry, "textclf_batch_size_count")
    assert client.post("/explain", json={"inputs": "late goal"}).status_code == 200
    assert client.post("/explain", json={"inputs": "goal", "target": "x"}).status_code == 422
    assert sample(registry, "textclf_requests_total", endpoint="/explain", status="200") == 1
    assert sample(registry, "textclf_requests_total", endpoint="/explain", status="422") == 1
    assert sample(registry, "textclf_request_duration_seconds_count", endpoint="/explain") == 2
    assert sample(registry, "textclf_batch_size_count") == batches  # never on the batcher


def test_runs_off_the_event_loop(client: TestClient, monkeypatch) -> None:
    seen = {}

    def fake_explain(*args, **kwargs) -> dict:
        try:
            asyncio.get_running_loop()
            seen["loop"] = True
        except RuntimeError:  # a worker thread: no running loop
            seen["loop"] = False
        return {"label": LABELS[0]}

    monkeypatch.setattr(explain_route, "explain", fake_explain)
    assert client.post("/explain", json={"inputs": "goal"}).status_code == 200
    assert seen == {"loop": False}


def test_queue_limit_answers_429(monkeypatch) -> None:
    monkeypatch.setattr(explain_route, "MAX_WAITING", 1)

    async def scenario() -> list[str]:
        turns, order = explain_route._Turns(), []
        release = asyncio.Event()

        async def user(name: str) -> None:
            async with turns.turn():
                order.append(name)
                await release.wait()

        first = asyncio.create_task(user("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(user("second"))  # waits: allowed (1 waiting)
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as refused:
            async with turns.turn():
                pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"]
        release.set()
        await asyncio.gather(first, second)
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


def test_api_key_is_required(settings_factory, registry) -> None:
    with TestClient(create_app(settings_factory(api_key="s3cret"), registry)) as client:
        assert client.post("/explain", json={"inputs": "goal"}).status_code == 401
        reply = client.post("/explain", json={"inputs": "goal"},
                            headers={"authorization": "Bearer s3cret"})
        assert reply.status_code == 200

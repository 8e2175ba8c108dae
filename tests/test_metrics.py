"""Metric values move as expected; batching really coalesces concurrent requests."""

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.main import create_app
from service.metrics import Metrics
from tests.conftest import sample


def test_request_and_prediction_metrics_move(client, registry):
    before = sample(registry, "textclf_requests_total", endpoint="/predict", status="200")
    client.post("/predict", json={"inputs": ["the team won", "shares fell"]})
    client.post("/predict", json={"inputs": ""})
    assert sample(registry, "textclf_requests_total", endpoint="/predict", status="200") == before + 1
    assert sample(registry, "textclf_requests_total", endpoint="/predict", status="400") == 1
    assert sample(registry, "textclf_request_duration_seconds_count", endpoint="/predict") == 2
    assert sample(registry, "textclf_input_tokens_count") == 2
    assert sample(registry, "textclf_input_tokens_sum") == 5  # 3 + 2 tokens
    assert sample(registry, "textclf_oov_ratio_count") == 2
    assert sample(registry, "textclf_prediction_confidence_count") == 2
    assert sample(registry, "textclf_batch_size_sum") == 2  # warm-up does not count
    total = sum(sample(registry, "textclf_predictions_total", label=lb)
                for lb in ("business", "sport", "tech"))
    assert total == 2
    assert sample(registry, "textclf_queue_duration_seconds_count") >= 1
    assert sample(registry, "textclf_inference_duration_seconds_count") >= 1


def test_model_info_and_unknown_paths(client, registry):
    version = client.get("/info").json()["model_version"]
    assert sample(registry, "textclf_model_info", version=version, device="cpu",
                  dtype="float32") == 1
    client.get("/some/secret/path")
    assert sample(registry, "textclf_requests_total", endpoint="other", status="404") == 1


def test_exposition_has_no_request_text(client):
    client.post("/predict", json={"inputs": "unmistakable-marker-text"})
    text = client.get("/metrics").text
    assert "unmistakable" not in text
    assert "# TYPE textclf_requests_total counter" in text
    assert "process_resident_memory_bytes" in text
    assert "textclf_queue_depth 0.0" in text


def test_a_scrape_renders_off_the_event_loop(client, monkeypatch):
    """Rendering reads every worker's files in multiprocess mode: never on the loop."""
    metrics = client.app.state.textclf.metrics
    render, loops = metrics.render, []

    def recording_render() -> bytes:
        try:
            loops.append(asyncio.get_running_loop())
        except RuntimeError:
            loops.append(None)
        return render()

    monkeypatch.setattr(metrics, "render", recording_render)
    assert "textclf_requests_total" in client.get("/metrics").text
    assert loops == [None]


def hold_inference(serving) -> asyncio.Event:
    """Make the inference thread wait for the returned event before each forward pass, so that
    requests pile up behind the one being computed (passes go to the Python thread, where a
    test can block them)."""
    original = serving.predictor.compute
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def blocked(batch):
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=5)
        return original(batch)

    serving.predictor.compute = blocked
    serving.predictor.launch = lambda batch, after=None: None
    return release


@pytest.mark.anyio
async def test_concurrent_requests_share_a_forward_pass(settings_factory, registry):
    app = create_app(settings_factory(max_batch_delay_ms=50, inference_thread=True), registry)
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://t") as http):
        gate = hold_inference(app.state.textclf.serving)
        calls = [http.post("/predict", json={"inputs": f"goal {i}"}) for i in range(12)]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.2)
        gate.set()
        replies = await asyncio.gather(*tasks)
    assert all(r.status_code == 200 for r in replies)
    batches = sample(registry, "textclf_batch_size_count")
    texts = sample(registry, "textclf_batch_size_sum")
    assert texts == 12
    assert batches <= 2, f"12 concurrent requests took {batches} forward passes"
    assert max(int(r.headers["x-batch-size"]) for r in replies) >= 11


@pytest.mark.anyio
async def test_inline_forward_passes_also_share_batches(settings_factory, registry):
    """With forward passes on the event loop (no inference thread) requests that arrive
    together still form one batch, and each gets its own rows back."""
    app = create_app(settings_factory(max_batch_delay_ms=50, inference_thread=False), registry)
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://t") as http):
        assert app.state.textclf.serving.batcher.placement.mode == "loop"
        texts = [f"goal {i}" if i % 2 else f"market shares {i}" for i in range(12)]
        replies = await asyncio.gather(*(http.post("/predict", json={"inputs": t}) for t in texts))
        alone = [(await http.post("/predict", json={"inputs": t})).json() for t in texts]
    for reply, single in zip(replies, alone, strict=True):
        assert [x["label"] for x in reply.json()] == [x["label"] for x in single]
        assert [x["score"] for x in reply.json()] == pytest.approx([x["score"] for x in single],
                                                                  abs=1e-5)
    assert sample(registry, "textclf_batch_size_sum") == 24
    assert sample(registry, "textclf_batch_size_count") <= 12 + 2, "the 12 at once took > 2 passes"


@pytest.mark.anyio
async def test_full_queue_answers_429_at_once(settings_factory, registry):
    app = create_app(settings_factory(max_queue_size=2, inference_thread=True), registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            release = hold_inference(app.state.textclf.serving)
            first = asyncio.create_task(http.post("/predict", json={"inputs": "a"}))
            await asyncio.sleep(0.1)  # `first` is now inside the forward pass
            queued = asyncio.create_task(http.post("/predict", json={"inputs": ["b", "c"]}))
            await asyncio.sleep(0.1)
            refused = await http.post("/predict", json={"inputs": "d"})
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error_type"] == "overloaded"
            assert sample(registry, "textclf_queue_depth") == 2
            # refused before its body is read: not even malformed JSON gets as far as a 422
            unread = await http.post("/predict", content=b"{not json",
                                     headers={"content-type": "application/json"})
            assert unread.status_code == 429
            # word vectors are a table lookup, not queued: still answered
            words = await http.post("/embed", json={"words": ["cup"]})
            assert words.status_code == 200 and words.json()["vectors"][0]["word"] == "cup"
            texts = await http.post("/embed", json={"inputs": "e"})
            assert texts.status_code == 429
            release.set()
            assert (await first).status_code == 200 and (await queued).status_code == 200


def test_every_metric_has_a_row_in_the_readme_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(textclf_[a-z_]+)[{`]", readme, flags=re.MULTILINE))
    registry = CollectorRegistry()
    Metrics(registry, None)
    names = {m.name + ("_total" if m.type == "counter" else "")
             for m in registry.collect() if m.name.startswith("textclf_")}
    assert names and names <= documented, f"not in the README's table: {sorted(names - documented)}"

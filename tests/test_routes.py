"""Every endpoint through TestClient(create_app(...)) on the tiny fixed-weight artifact."""

import math

import torch

from model.artifact import load_artifact
from tests.conftest import LABELS


def expected_probabilities(artifact_dir, texts):
    artifact = load_artifact(artifact_dir)
    ids, lengths = artifact.vocab.encode_batch(texts, artifact.max_length)
    with torch.no_grad():
        return torch.softmax(artifact.model(ids, lengths), dim=1).tolist()


def test_predict_one_text_matches_the_model_exactly(client, artifact_dir):
    reply = client.post("/predict", json={"inputs": "the team won the cup"})
    assert reply.status_code == 200
    body = reply.json()
    assert [d["label"] for d in body] == sorted(LABELS, key=lambda lb: -{
        d["label"]: d["score"] for d in body}[lb])
    scores = [d["score"] for d in body]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(sum(scores), 1.0, rel_tol=1e-5)
    want = dict(zip(LABELS, expected_probabilities(artifact_dir, ["the team won the cup"])[0], strict=True))
    for item in body:
        assert math.isclose(item["score"], want[item["label"]], rel_tol=1e-5)


def test_predict_list_keeps_order_and_top_k(client, artifact_dir):
    texts = ["shares fell", "new phone chip", "late goal"]
    body = client.post("/predict", json={"inputs": texts, "top_k": 1}).json()
    assert len(body) == 3 and all(len(row) == 1 for row in body)
    want = expected_probabilities(artifact_dir, texts)
    for row, probs in zip(body, want, strict=True):
        assert row[0]["label"] == LABELS[max(range(3), key=probs.__getitem__)]


def test_raw_scores_are_logits(client, artifact_dir):
    body = client.post("/predict", json={"inputs": "bank rates", "raw_scores": True}).json()
    artifact = load_artifact(artifact_dir)
    ids, lengths = artifact.vocab.encode_batch(["bank rates"])
    with torch.no_grad():
        logits = artifact.model(ids, lengths)[0].tolist()
    got = sorted(d["score"] for d in body)
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, sorted(logits), strict=True))


def test_plain_text_body_is_one_text(client):
    reply = client.post("/predict", content=b"the team won",
                        headers={"content-type": "text/plain; charset=utf-8"})
    assert reply.status_code == 200
    assert isinstance(reply.json(), list) and "label" in reply.json()[0]


def test_timing_and_request_id_headers(client):
    reply = client.post("/predict", json={"inputs": "goal"}, headers={"x-request-id": "abc-123"})
    assert reply.headers["x-request-id"] == "abc-123"
    assert float(reply.headers["x-queue-time"]) >= 0
    assert float(reply.headers["x-inference-time"]) > 0
    fresh = client.post("/predict", json={"inputs": "goal"})
    assert len(fresh.headers["x-request-id"]) == 32


def test_truncation(client):
    long_text = " ".join(["goal"] * 40)  # the fixture's max_length is 16
    assert client.post("/predict", json={"inputs": long_text}).status_code == 200
    refused = client.post("/predict", json={"inputs": long_text, "truncate": False})
    assert refused.status_code == 422
    assert "40 tokens" in refused.json()["error"]


def test_embed_words_get_and_post(client, artifact_dir):
    artifact = load_artifact(artifact_dir)
    got = client.get("/embed", params={"word": ["Goal", "zebra"]}).json()
    assert got["dim"] == 8
    goal, zebra = got["vectors"]
    assert goal["token"] == "goal" and goal["in_vocab"] and goal["id"] == artifact.vocab.lookup("goal")
    torch.testing.assert_close(torch.tensor(goal["vector"]),
                               artifact.model.embedding.weight[goal["id"]].detach())
    assert zebra["in_vocab"] is False and zebra["id"] == 1
    torch.testing.assert_close(torch.tensor(zebra["vector"]),
                               artifact.model.embedding.weight[1].detach())
    posted = client.post("/embed", json={"words": ["goal"], "normalize": True, "neighbors": 3}).json()
    vector = torch.tensor(posted["vectors"][0]["vector"])
    assert math.isclose(vector.norm().item(), 1.0, rel_tol=1e-5)
    neighbors = posted["vectors"][0]["neighbors"]
    assert len(neighbors) == 3 and all(n["word"] not in ("goal", "<pad>", "<unk>") for n in neighbors)
    assert [n["score"] for n in neighbors] == sorted((n["score"] for n in neighbors), reverse=True)


def test_embed_texts_are_pooled_features(client, artifact_dir):
    body = client.post("/embed", json={"inputs": ["the team won", "shares fell"]}).json()
    artifact = load_artifact(artifact_dir)
    ids, lengths = artifact.vocab.encode_batch(["the team won", "shares fell"])
    with torch.no_grad():
        want = artifact.model.features(ids, lengths)
    torch.testing.assert_close(torch.tensor(body), want, atol=1e-6, rtol=1e-5)
    single = client.post("/embed", json={"inputs": "the team won"}).json()
    assert len(single) == 1 and len(single[0]) == 12  # hidden 6 x 2 directions


def test_tokenize_offsets(client):
    body = client.post("/tokenize", json={"inputs": "Goal, zebra!"}).json()
    tokens = body[0]
    assert [(t["text"], t["unk"], t["start"], t["stop"]) for t in tokens] == [
        ("goal", False, 0, 4), (",", True, 4, 5), ("zebra", True, 6, 11), ("!", True, 11, 12)]
    assert len(client.post("/tokenize", json={"inputs": ["a", "b"]}).json()) == 2


def test_info(client):
    info = client.get("/info").json()
    assert info["labels"] == LABELS
    assert info["model_name"] == "tiny" and info["device"] == "cpu"
    assert len(info["weights_sha256"]) == 64
    assert info["embedding_dim"] == 8 and info["hidden_size"] == 6 and info["max_tokens"] == 16
    assert {"max_batch_size", "max_batch_delay_ms", "textclf_version", "torch_version"} <= info.keys()


def test_health(client):
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json()["status"] == "ok"
    assert client.get("/health").status_code == 200


def test_not_ready_before_start(settings_factory):
    from fastapi.testclient import TestClient

    from service.main import create_app

    app = create_app(settings_factory())
    with TestClient(app) as started:
        app.state.textclf.begin_shutdown()
        assert started.get("/health/ready").status_code == 503
        assert started.get("/health/live").status_code == 200
    never_started = TestClient(create_app(settings_factory()))  # no `with`: lifespan not run
    reply = never_started.get("/health/ready")
    assert reply.status_code == 503 and reply.json()["error_type"] == "unhealthy"
    assert never_started.post("/predict", json={"inputs": "x"}).status_code == 503


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/embed", "/tokenize", "/info", "/health/ready"} <= schema["paths"].keys()

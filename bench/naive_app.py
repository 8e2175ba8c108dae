"""Peer (b): the same model behind a plain FastAPI endpoint, one forward pass per request.

What a first version usually looks like: a pydantic request model, a sync handler (FastAPI
runs it in its thread pool), tokenize -> tensor -> model -> softmax per request, no batching.
Same uvicorn settings as textclf (uvloop, httptools, no access log) and the same torch thread
setting (1 intra-op thread, --threads), so the comparison is about batching and overhead.

    python -m bench.naive_app --model-dir artifacts/default --port 8001 [--workers N]
"""

from __future__ import annotations

import argparse
import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from model.artifact import load_artifact


class PredictRequest(BaseModel):
    inputs: str


def create_app() -> FastAPI:
    torch.set_num_threads(int(os.environ.get("NAIVE_THREADS", "1")))
    artifact = load_artifact(os.environ["NAIVE_MODEL_DIR"], "cpu")
    model, vocab, labels = artifact.model, artifact.vocab, artifact.labels
    max_length = artifact.max_length
    app = FastAPI()

    @app.post("/predict")
    def predict(req: PredictRequest) -> list[dict]:
        ids = vocab.encode(req.inputs, max_length) or [0]
        with torch.inference_mode():
            logits = model(torch.tensor([ids]), torch.tensor([len(ids)]))
            probs = torch.softmax(logits, dim=1)[0].tolist()
        order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
        return [{"label": labels[i], "score": probs[i]} for i in order]

    @app.get("/health/ready")
    def ready() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    os.environ["NAIVE_MODEL_DIR"] = args.model_dir
    os.environ["NAIVE_THREADS"] = str(args.threads)
    uvicorn.run("bench.naive_app:create_app", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()

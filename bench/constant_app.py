"""Peer (c), the HTTP ceiling: a FastAPI POST endpoint that reads the body and answers a
constant JSON of /predict's shape. No model, no parsing: what uvicorn + FastAPI cost alone.

    python -m bench.constant_app --port 8002 [--workers N]
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

LABELS = ("business", "entertainment", "politics", "sports", "tech")
BODY = orjson.dumps([{"label": label, "score": 0.2} for label in LABELS])


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    @app.get("/health/ready")
    async def ready() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    uvicorn.run("bench.constant_app:create_app", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()

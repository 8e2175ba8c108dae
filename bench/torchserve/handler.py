"""TorchServe handler for the textclf artifact: TorchServe's own batching, same model.

The archive carries model/network.py and model/tokenizer.py (flat, as `network` and
`tokenizer`) and the artifact's config.json, vocab.json and model.safetensors. The modules
those two import (model.words, model.unpacked) come from the environment TorchServe's workers
run in: the benchmark's own Python, where textclf is installed. A request body is textclf's
{"inputs": "text"} (or the bare text); the answer is the same [{label, score}, ...] best first.

Each TorchServe batch (up to batchSize requests, or what arrived within maxBatchDelay) is one
padded forward pass, exactly as in textclf's Predictor.run_batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import safetensors.torch
import torch

log = logging.getLogger(__name__)


class TextclfHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:  # noqa: ANN001 - TorchServe's Context
        from network import LSTMClassifier, ModelConfig  # shipped in the archive
        from tokenizer import Vocabulary

        threads = os.environ.get("TEXTCLF_TS_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        root = context.system_properties["model_dir"]
        with open(os.path.join(root, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self.vocab = Vocabulary.load(os.path.join(root, "vocab.json"))
        self.model = LSTMClassifier(ModelConfig.from_dict(config["model"]))
        self.model.load_state_dict(safetensors.torch.load_file(os.path.join(root, "model.safetensors")))
        # as TEXTCLF_DTYPE does for textclf: the whole model in that precision, softmax in float32
        self.model.eval().to(getattr(torch, os.environ.get("TEXTCLF_TS_DTYPE", "float32")))
        self.labels = list(config["labels"])
        self.max_length = int(config["tokenizer"]["max_length"])
        self.initialized = True
        log.info("textclf handler ready: torch threads %d, %s", torch.get_num_threads(),
                 next(self.model.parameters()).dtype)

    def _text(self, row: dict) -> str:
        data = row.get("body", row.get("data"))
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
            with contextlib.suppress(ValueError):
                data = json.loads(data)
        return data["inputs"] if isinstance(data, dict) else str(data)

    @torch.inference_mode()
    def handle(self, data: list[dict], context) -> list[list[dict]]:  # noqa: ANN001
        encoded = [self.vocab.encode(self._text(row), self.max_length) for row in data]
        lengths = torch.tensor([max(1, len(e)) for e in encoded], dtype=torch.long)
        ids = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long)
        for i, seq in enumerate(encoded):
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        probs = torch.softmax(self.model(ids, lengths).float(), dim=1).tolist()
        out = []
        for row in probs:
            order = sorted(range(len(row)), key=row.__getitem__, reverse=True)
            out.append([{"label": self.labels[i], "score": row[i]} for i in order])
        return out


_service = TextclfHandler()


def handle(data: list[dict] | None, context) -> list[list[dict]] | None:  # noqa: ANN001
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)

"""`python -m model.evaluate --artifact DIR (--dataset NAME | --test FILE)`: metrics as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model.artifact import ArtifactError, load_artifact
from model.batches import predict_logits
from model.datafiles import read_rows
from model.datasets import DATASET_NAMES, DataError, load_named
from model.device import DeviceError, resolve_device
from model.report import classification_metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__)
    p.add_argument("--artifact", type=Path, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASET_NAMES, help="its standard test split")
    src.add_argument("--test", type=Path, help="a CSV / TSV / JSONL file with texts and labels")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--batch-size", type=int, default=128)
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    artifact = load_artifact(args.artifact, device)
    if args.dataset:
        data = load_named(args.dataset, args.cache_dir)
        texts, gold = data.test_texts, data.test_labels
    else:
        rows = read_rows(args.test, args.text_column, args.label_column)
        texts, gold = rows.texts, rows.labels
    unknown = sorted(set(gold) - set(artifact.labels))
    if unknown:
        raise DataError(f"labels not known to the model: {', '.join(unknown[:10])} "
                        f"(model labels: {', '.join(artifact.labels)})")
    index = {label: i for i, label in enumerate(artifact.labels)}
    encoded = [artifact.vocab.encode(t, artifact.max_length) for t in texts]
    tick = time.perf_counter()
    logits = predict_logits(artifact.model, encoded, device, args.batch_size)
    seconds = time.perf_counter() - tick
    metrics = classification_metrics([index[y] for y in gold], logits.argmax(1).tolist(),
                                     artifact.labels)
    metrics.update(model=artifact.name, version=artifact.version, seconds=round(seconds, 3),
                   documents_per_second=round(len(texts) / max(seconds, 1e-9), 1))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = evaluate(args)
    except (ArtifactError, DataError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

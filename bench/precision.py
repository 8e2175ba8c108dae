"""Precision of the /predict forward pass (TEXTCLF_DTYPE): speed and answers against float32.

    python -m bench.precision                                   # default model, bbc test split
    python -m bench.precision --model-dir artifacts/r8 --dataset r8

Per dtype, through the service's own Predictor.run_batch on 1 thread (as the service): texts/s
for batches of 32 thirty-word texts (what the serving benchmark sends), test accuracy and
macro-F1 on the dataset's standard test split, how many top labels differ from float32 and the
largest difference in any probability. Whether the CPU has the dtype's arithmetic decides the
speed: without it bfloat16 and float16 are emulated and slower than float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from bench.common import RESULTS, cpu_model, request_texts
from bench.inprocess import timed_round
from model.artifact import Artifact, load_artifact
from model.datasets import DATASET_NAMES, load_named
from model.device import DTYPES, native_dtype
from model.report import classification_metrics
from service.predictor import Predictor

CPU = torch.device("cpu")


def texts_per_second(predictor: Predictor, encoded: list[list[int]], min_time: float,
                     repeat: int) -> float:
    """Median over `repeat` rounds of one batch, run again and again."""
    rounds = [timed_round(lambda: predictor.run_batch(encoded), min_time) for _ in range(repeat)]
    return statistics.median(calls * len(encoded) / wall for calls, wall, _ in rounds)


def probabilities(predictor: Predictor, encoded: list[list[int]], batch: int) -> torch.Tensor:
    """(N, C) for the whole split, `batch` texts per forward pass."""
    rows: list[list[float]] = []
    for start in range(0, len(encoded), batch):
        rows += predictor.run_batch(encoded[start:start + batch]).probabilities
    return torch.tensor(rows)


def compare_dtypes(artifact: Artifact, texts: list[str], labels: list[str], dtypes: list[str],
                   args: argparse.Namespace) -> list[dict]:
    """One row per dtype (float32 first: the reference) over the labelled `texts`."""
    index = {label: i for i, label in enumerate(artifact.labels)}
    gold = [index[label] for label in labels]
    predictors = {name: Predictor(artifact, CPU, dtype=DTYPES[name]) for name in dtypes}
    first = predictors["float32"]
    split = [first.encode(t)[: first.max_tokens] for t in texts]
    short = [first.encode(t)[: first.max_tokens] for t in request_texts(30)[: args.batch]]
    reference = probabilities(first, split, args.batch)
    rows = []
    for name, predictor in predictors.items():
        predictor.warmup()
        probs = reference if name == "float32" else probabilities(predictor, split, args.batch)
        metrics = classification_metrics(gold, probs.argmax(1).tolist(), artifact.labels)
        rows.append({
            "dtype": name, "native": native_dtype(DTYPES[name], CPU),
            "texts_per_s": texts_per_second(predictor, short, args.min_time, args.repeat),
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "labels_changed": int((probs.argmax(1) != reference.argmax(1)).sum()),
            "max_prob_diff": float((probs - reference).abs().max()),
        })
    return rows


def measure(args: argparse.Namespace) -> dict:
    artifact = load_artifact(args.model_dir)
    dataset = args.dataset or artifact.config.get("training", {}).get("dataset") or "bbc"
    data = load_named(dataset)
    rows = compare_dtypes(artifact, data.test_texts, data.test_labels, args.dtypes, args)
    return {"model": artifact.name, "version": artifact.version, "dataset": dataset,
            "test_texts": len(data.test_texts), "batch": args.batch,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_model": cpu_model(), "rows": rows}


def table(result: dict) -> str:
    base = result["rows"][0]["texts_per_s"]
    lines = [f"{result['model']} {result['version']}, {result['dataset']} test split "
             f"({result['test_texts']} texts), {result['cpu_model']}, torch {result['torch']}, "
             f"{result['threads']} thread(s), batch {result['batch']}",
             "| dtype | native on this CPU | 30-word texts/s | × float32 | test accuracy "
             "| macro-F1 | top labels changed | max prob diff |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        lines.append(f"| {r['dtype']} | {'yes' if r['native'] else 'no (emulated)'} "
                     f"| {r['texts_per_s']:,.0f} | {r['texts_per_s'] / base:.2f} "
                     f"| {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['labels_changed']} "
                     f"| {r['max_prob_diff']:.1e} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--dataset", choices=DATASET_NAMES, help="default: the one it was trained on")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per timed round")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds per dtype (median)")
    p.add_argument("--out", type=Path, default=RESULTS / "precision.json")
    args = p.parse_args(argv)
    args.dtypes = ["float32"] + [d for d in args.dtypes if d != "float32"]  # the reference first
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy benchmark: textclf's LSTM against TF-IDF + linear SVM and fastText, same splits.

    python bench/accuracy.py                       # 20ng r8 r52 bbc, all three systems
    python bench/accuracy.py --datasets r8 --systems textclf tfidf-svm
    python bench/accuracy.py --ablation r8         # what each LSTM choice gives on one dataset
    python bench/accuracy.py --ablation bbc --seeds 0,1,2 --variants default frozen "mean pooling"

Prints one Markdown table (accuracy, macro-F1, training seconds per system and dataset) and
writes bench/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.datasets import DATASET_NAMES, Dataset, load_named  # noqa: E402
from model.report import classification_metrics  # noqa: E402
from model.train import parse_args as train_args  # noqa: E402
from model.train import run as train_run  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Per-dataset LSTM settings: long newsgroup posts keep more tokens.
LSTM_OPTIONS = {
    "20ng": ["--max-length", "400", "--epochs", "12"],
    "r8": ["--max-length", "256"],
    "r52": ["--max-length", "256"],
    "bbc": ["--max-length", "256"],
}
ABLATIONS = {
    "default (BiLSTM, max pool, GloVe 50-d fine-tuned)": [],
    "embeddings from scratch (100-d)": ["--embeddings", "none"],
    "GloVe 50-d frozen": ["--freeze-embeddings"],
    "mean pooling": ["--pooling", "mean"],
    "last hidden state": ["--pooling", "last"],
    "unidirectional": ["--no-bidirectional"],
    "max length 128": ["--max-length", "128"],
    "hidden size 64": ["--hidden-size", "64"],
}


def score(data: Dataset, predicted: list[str]) -> dict:
    index = {label: i for i, label in enumerate(data.labels)}
    metrics = classification_metrics([index[y] for y in data.test_labels],
                                     [index[y] for y in predicted], data.labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def run_textclf(data: Dataset, options: list[str], threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = train_args(["--dataset", data.name, "--out", out, "--threads", str(threads),
                           "--no-progress", *options])
        tick = time.perf_counter()
        metrics = train_run(args)
        seconds = time.perf_counter() - tick
    epochs = len(metrics["history"])
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "train_seconds": seconds, "epochs": epochs,
            "seconds_per_epoch": metrics["train_seconds"] / max(1, epochs)}


def run_tfidf_svm(data: Dataset, _threads: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    pipeline = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
                             LinearSVC(C=1.0))
    tick = time.perf_counter()
    pipeline.fit(data.train_texts, data.train_labels)
    seconds = time.perf_counter() - tick
    return {**score(data, list(pipeline.predict(data.test_texts))), "train_seconds": seconds}


def run_fasttext(data: Dataset, threads: int) -> dict:
    import fasttext

    def line(text: str) -> str:
        return " ".join(text.lower().split())

    # shuffled: the files are sorted by label, and fastText's SGD reads its file in order (on
    # 20ng, in file order it scored 0.38, shuffled 0.77)
    pairs = list(zip(data.train_texts, data.train_labels, strict=True))
    random.Random(0).shuffle(pairs)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as handle:
        for text, label in pairs:
            handle.write(f"__label__{label.replace(' ', '_')} {line(text)}\n")
        handle.flush()
        tick = time.perf_counter()
        model = fasttext.train_supervised(handle.name, epoch=25, lr=0.5, wordNgrams=2, dim=100,
                                          thread=threads, seed=0, verbose=0)
        seconds = time.perf_counter() - tick
    back = {label.replace(" ", "_"): label for label in data.labels}
    predicted = [back[model.predict(line(t))[0][0].removeprefix("__label__")]
                 for t in data.test_texts]
    return {**score(data, predicted), "train_seconds": seconds}


def run_ablation(dataset: str, seeds: list[int], variants: list[str] | None,
                 threads: int) -> list[dict]:
    data, rows = load_named(dataset), []
    for name, options in ABLATIONS.items():
        if variants and not any(v in name for v in variants):
            continue
        for seed in seeds:
            result = run_textclf(data, [*options, "--seed", str(seed)], threads)
            rows.append({"dataset": dataset, "system": name, "seed": seed, **result})
            print(table(rows[-1:]).splitlines()[-1], f"seed {seed}", flush=True)
    return rows


SYSTEMS = {"textclf": None, "tfidf-svm": run_tfidf_svm, "fasttext": run_fasttext}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | system | accuracy | macro-F1 | training s | s/epoch |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        per_epoch = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
        lines.append(f"| {r['dataset']} | {r['system']} | {r['accuracy']:.4f} | "
                     f"{r['macro_f1']:.4f} | {r['train_seconds']:.1f} | {per_epoch} |")
    return "\n".join(lines)


def seed_table(rows: list[dict]) -> str:
    """Per variant over its seeds: mean accuracy and macro-F1, and the accuracy range."""
    lines = ["| variant | seeds | accuracy mean (min-max) | macro-F1 mean |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["system"] for r in rows):
        runs = [r for r in rows if r["system"] == name]
        acc = [r["accuracy"] for r in runs]
        f1 = sum(r["macro_f1"] for r in runs) / len(runs)
        lines.append(f"| {name} | {','.join(str(r.get('seed', 0)) for r in runs)} | "
                     f"{sum(acc) / len(acc):.4f} ({min(acc):.4f}-{max(acc):.4f}) | {f1:.4f} |")
    return "\n".join(lines)


def _key(row: dict) -> tuple:
    return row["dataset"], row["system"], row.get("seed", 0)


def merged(target: Path, rows: list[dict]) -> list[dict]:
    """Earlier results for other (dataset, system, seed) runs are kept: datasets can be run one
    at a time."""
    new = {_key(r) for r in rows}
    old = json.loads(target.read_text()) if target.exists() else []
    return [r for r in old if _key(r) not in new] + rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, default=list(DATASET_NAMES))
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--ablation", choices=DATASET_NAMES, help="LSTM variants on one dataset")
    p.add_argument("--seeds", default="0", help="ablation: comma list of training seeds")
    p.add_argument("--variants", nargs="+", help="ablation: only rows whose name contains one")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rows: list[dict] = []
    if args.ablation:
        rows = run_ablation(args.ablation, [int(s) for s in args.seeds.split(",")],
                            args.variants, args.threads)
    for name in [] if args.ablation else args.datasets:
        data = load_named(name)
        for system in args.systems:
            runner = SYSTEMS[system]
            result = (run_textclf(data, LSTM_OPTIONS[name], args.threads) if runner is None
                      else runner(data, args.threads))
            rows.append({"dataset": name, "system": system, **result})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.ablation and args.seeds != "0":
        print(seed_table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / ("ablation.json" if args.ablation else "accuracy.json")
    target.write_text(json.dumps(merged(target, rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

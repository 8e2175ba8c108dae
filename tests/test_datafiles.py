"""Training data from user files (model/datafiles.py, through datasets.load_files): CSV, TSV and
JSONL, a BOM, custom columns, a held-out split when there is no test file, and bad files whose
error names the file and the line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from model.datasets import DataError, load_files


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

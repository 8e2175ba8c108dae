"""Local cache of normalised datasets: <dir>/train.jsonl, test.jsonl and source.json.

source.json is written last and removed first, so its presence means the other two files are
complete; a cache for another package version, or one that does not match its recorded counts,
is treated as absent and rebuilt by the caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Split = tuple[list[str], list[str], list[str], list[str]]  # train texts/labels, test texts/labels
SOURCE_FILE = "source.json"


def read_source(directory: Path, package: str, version: str) -> dict[str, Any] | None:
    """Return the cached provenance if it belongs to package==version, else None."""
    try:
        source = json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(source, dict) or (source.get("package"), source.get("version")) != (
        package,
        version,
    ):
        return None
    return source


def read_cache(directory: Path, package: str, version: str) -> tuple[Split, dict[str, Any]] | None:
    source = read_source(directory, package, version)
    if source is None:
        return None
    try:
        train_texts, train_labels = _read_jsonl(directory / "train.jsonl")
        test_texts, test_labels = _read_jsonl(directory / "test.jsonl")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    counts = source.get("counts", {})
    if (counts.get("train"), counts.get("test")) != (len(train_texts), len(test_texts)):
        return None
    return (train_texts, train_labels, test_texts, test_labels), source


def write_cache(directory: Path, split: Split, source: dict[str, Any]) -> None:
    train_texts, train_labels, test_texts, test_labels = split
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SOURCE_FILE).unlink(missing_ok=True)
    _write_atomic(directory / "train.jsonl", _jsonl_lines(train_texts, train_labels))
    _write_atomic(directory / "test.jsonl", _jsonl_lines(test_texts, test_labels))
    _write_atomic(
        directory / SOURCE_FILE, [json.dumps(source, indent=2, ensure_ascii=False) + "\n"]
    )


def _jsonl_lines(texts: list[str], labels: list[str]) -> Iterable[str]:
    for text, label in zip(texts, labels, strict=True):
        yield json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            texts.append(str(record["text"]))
            labels.append(str(record["label"]))
    return texts, labels


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    # a temporary name per process, then rename: readers never see a half-written file
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8", newline="\n") as out:
        out.writelines(lines)
    os.replace(temporary, path)

"""Read labelled text from user files (CSV, TSV, JSONL) with errors that name file and line.

Line numbers are 1-based physical lines of the file, so they match what an editor shows
(the CSV header is line 1; a quoted multi-line CSV record is reported at its first line).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

CSV_DELIMITERS: dict[str, str] = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")


class DataError(ValueError):
    """Input data that cannot be used; the message says which file and line, and why."""


@dataclass
class Rows:
    """Parsed rows of one file, with the line each row came from (for later error messages)."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)


def add_row(
    rows: Rows, path: Path, line: int, text: str, label: str, columns: tuple[str, str]
) -> None:
    """Append one row after rejecting empty cells; surrounding whitespace is dropped."""
    text, label = text.strip(), label.strip()
    for value, column in ((text, columns[0]), (label, columns[1])):
        if not value:
            raise DataError(f"{path} line {line}: empty value in column {column!r}")
    rows.texts.append(text)
    rows.labels.append(label)
    rows.line_numbers.append(line)


def require_two_classes(path: Path, rows: Rows) -> None:
    """Training data with one label would "train" a constant; refuse it up front."""
    if len(set(rows.labels)) < 2:
        first, last = rows.line_numbers[0], rows.line_numbers[-1]
        raise DataError(
            f"{path} lines {first}-{last}: every row has label {rows.labels[0]!r}; "
            "training needs at least 2 classes"
        )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode_utf8(path: Path, raw: bytes) -> str:
    """Decode a whole file as UTF-8 (BOM allowed); on failure report the first bad line."""
    body = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        line = body.count(b"\n", 0, err.start) + 1
        column = err.start - (body.rfind(b"\n", 0, err.start) + 1) + 1
        bad = body[err.start : err.end]
        raise DataError(
            f"{path} line {line}: bytes {bad!r} at column {column} are not valid UTF-8; "
            "re-save the file as UTF-8"
        ) from None


def read_rows(path: Path, text_column: str = "text", label_column: str = "label") -> Rows:
    """Read every (text, label) row of a .csv/.tsv/.jsonl/.ndjson file, chosen by extension."""
    suffix = path.suffix.lower()
    if suffix not in CSV_DELIMITERS and suffix not in JSONL_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use .csv, .tsv, .jsonl or .ndjson"
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror})") from None
    text = decode_utf8(path, raw)
    if not text.strip():
        raise DataError(f"{path} line 1: file is empty (no header, no rows)")
    columns = (text_column, label_column)
    if suffix in JSONL_SUFFIXES:
        rows = _parse_jsonl(path, text, columns)
    else:
        rows = _parse_csv(path, text, CSV_DELIMITERS[suffix], columns)
    return rows


def _parse_csv(path: Path, text: str, delimiter: str, columns: tuple[str, str]) -> Rows:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] = []
    header_line = 0
    rows = Rows()
    lines_read = 0  # reader.line_num before the current record, to find where a record starts
    try:
        for record in reader:
            start, lines_read = lines_read + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines and all-empty rows (spreadsheet exports) carry no data
            if not header:
                header, header_line = [name.strip() for name in record], start
                indices = _column_indices(path, header_line, header, columns)
                continue
            if len(record) != len(header):
                raise DataError(
                    f"{path} line {start}: expected {len(header)} fields, found {len(record)} "
                    f"(quote text that contains {delimiter!r} or line breaks)"
                )
            add_row(rows, path, start, record[indices[0]], record[indices[1]], columns)
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV ({err})") from None
    if not header:
        raise DataError(
            f"{path} line 1: no header line (expected columns {columns[0]!r}, {columns[1]!r})"
        )
    if not rows.texts:
        raise DataError(f"{path} line {header_line + 1}: no data rows after the header")
    return rows


def _column_indices(
    path: Path, line: int, header: list[str], columns: tuple[str, str]
) -> tuple[int, int]:
    for column in columns:
        if column not in header:
            raise DataError(
                f"{path} line {line}: missing column {column!r} (columns: {', '.join(header)})"
            )
    return header.index(columns[0]), header.index(columns[1])


def _parse_jsonl(path: Path, text: str, columns: tuple[str, str]) -> Rows:
    rows = Rows()
    # split on "\n" only: str.splitlines() also breaks on U+2028 etc., which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path} line {number}: invalid JSON ({err.msg} at column {err.colno})"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {number}: expected a JSON object, found {type(record).__name__}"
            )
        values = [_json_cell(path, number, record, column) for column in columns]
        add_row(rows, path, number, values[0], values[1], columns)
    if not rows.texts:
        raise DataError(f"{path} line 1: no rows")
    return rows


def _json_cell(path: Path, line: int, record: dict[str, object], column: str) -> str:
    if column not in record:
        raise DataError(
            f"{path} line {line}: missing column {column!r} (columns: {', '.join(record)})"
        )
    value = record[column]
    # integer class ids are common in JSONL exports; floats/bools/null are almost always mistakes
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(
            f"{path} line {line}: column {column!r} must be a string, found {type(value).__name__}"
        )
    return value

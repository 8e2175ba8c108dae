"""Shared by the static deployment-file tests (test_deploy, test_monitoring, test_k8s): paths,
YAML loading, and the required linters (a missing one fails its test with the install command)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PORT = 8000   # the service's port in every manifest
UID = 10001   # the image's non-root user


def yaml_module() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError:
        pytest.fail("PyYAML is missing: pip install pyyaml")


def tool(name: str, install: str) -> str:
    """Path of an executable on PATH or next to this interpreter (a venv's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"`{name}` is not installed: {install}")
    return found


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus (Debian's package ships promtool)")


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml_module().safe_load_all(f) if d is not None]


def load(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, got {len(docs)}"
    return docs[0]

"""Archive the artifact for TorchServe and build the command that serves it (peer (d)).

TorchServe's batching is configured per model: `batch_size` requests or whatever arrived within
`max_batch_delay_ms`, per worker; `workers` Python workers behind the Java (Netty) frontend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.common import REPO

HANDLER = Path(__file__).resolve().parent / "handler.py"
QUIET_LOG = Path(__file__).resolve().parent / "log4j2.xml"
MODEL_NAME = "textclf"



def find(tool: str) -> str | None:
    """A command on PATH or next to this Python (a venv used without activating it)."""
    return shutil.which(tool, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                    os.environ.get("PATH", "")]))


def check_installed() -> str | None:
    """None when TorchServe can run here, else why not."""
    for tool in ("torchserve", "torch-model-archiver", "java"):
        if find(tool) is None:
            hint = "Java 17" if tool == "java" else "pip install torchserve torch-model-archiver"
            return f"{tool} not found ({hint})"
    return None


def archive(model_dir: Path, store: Path, network: Path | None = None) -> Path:
    """textclf.mar in `store`: the handler, the model code (`network`: another network.py) and
    the artifact's three files."""
    extra = [network or REPO / "model" / "network.py", REPO / "model" / "tokenizer.py",
             model_dir / "config.json", model_dir / "vocab.json", model_dir / "model.safetensors"]
    store.mkdir(parents=True, exist_ok=True)
    archiver = find("torch-model-archiver") or "torch-model-archiver"
    subprocess.run([archiver, "--model-name", MODEL_NAME, "--version", "1.0",
                    "--handler", str(HANDLER), "--extra-files", ",".join(map(str, extra)),
                    "--export-path", str(store), "--archive-format", "zip-store", "--force"],
                   check=True, capture_output=True, timeout=120)
    return store / f"{MODEL_NAME}.mar"


def write_config(workdir: Path, store: Path, ports: tuple[int, int, int], workers: int,
                 batch_size: int, max_batch_delay_ms: int) -> Path:
    inference, management, metrics = ports
    models = {MODEL_NAME: {"1.0": {
        "marName": f"{MODEL_NAME}.mar", "minWorkers": workers, "maxWorkers": workers,
        "batchSize": batch_size, "maxBatchDelay": max_batch_delay_ms, "responseTimeout": 120}}}
    lines = [
        f"inference_address=http://127.0.0.1:{inference}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}",
        f"model_store={store}", f"load_models={MODEL_NAME}.mar", f"models={json.dumps(models)}",
        "disable_token_authorization=true", "disable_system_metrics=true", "async_logging=true",
        "job_queue_size=1000", "install_py_dep_per_model=false",
    ]
    path = workdir / "config.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def network_at(rev: str, workdir: Path) -> Path:
    """model/network.py as of git revision `rev`, written under `workdir`."""
    source = subprocess.run(["git", "show", f"{rev}:model/network.py"], cwd=REPO, check=True,
                            capture_output=True, timeout=30).stdout
    path = workdir / "network" / "network.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source)
    return path


def command(workdir: Path, model_dir: Path, ports: tuple[int, int, int], workers: int,
            batch_size: int = 32, max_batch_delay_ms: int = 2, threads: int | None = None,
            dtype: str = "float32", quiet: bool = True,
            rev: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) for a foreground TorchServe; files go under `workdir`.
    `threads`: torch intra-op threads per worker; `dtype`: of the forward pass; `quiet`: no
    per-request logs (log4j2.xml);
    `rev`: archive model/network.py from that git revision instead of the working tree."""
    store = workdir / "store"
    archive(model_dir, store, network_at(rev, workdir) if rev else None)
    config = write_config(workdir, store, ports, workers, batch_size, max_batch_delay_ms)
    # this Python's bin first: TorchServe starts its workers with the `python` it finds on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"LOG_LOCATION": str(workdir / "logs"), "METRICS_LOCATION": str(workdir / "logs"),
           "TS_CONFIG_FILE": str(config), "PATH": path}
    if threads:
        env["TEXTCLF_TS_THREADS"] = str(threads)
    env["TEXTCLF_TS_DTYPE"] = dtype
    argv = [find("torchserve") or "torchserve", "--start", "--foreground", "--ncs",
            "--disable-token-auth", "--model-store", str(store), "--ts-config", str(config)]
    if quiet:
        argv += ["--log-config", str(QUIET_LOG)]
    return argv, env


def ready(url: str, body: bytes) -> bool:
    """True once a prediction answers 200 (the frontend answers /ping before workers load)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False

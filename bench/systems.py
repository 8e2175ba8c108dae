"""The servers the serving benchmark compares, each started as its own process group.

A system spec is NAME[:WORKERS], NAME one of textclf, naive, constant, bare, torchserve; a torchserve
spec may end in @REV to archive model/network.py from that git revision (e.g. the model code
before the inference fast path) instead of the working tree's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Processes, free_port, http_status
from bench.torchserve import launch as ts

NAMES = ("textclf", "naive", "constant", "bare", "torchserve")


@dataclass
class Options:
    model_dir: Path
    workdir: Path
    textclf_env: dict[str, str] = field(default_factory=dict)
    ts_batch_size: int = 32
    ts_delay_ms: int = 2
    ts_threads: int | None = None
    ts_dtype: str = "float32"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    url: str                       # where wrk sends its POSTs
    is_ready: Callable[[], bool]
    cwd: Path | None = None         # None: the repository root


@dataclass(frozen=True)
class System:
    name: str
    workers: int = 1
    rev: str | None = None  # torchserve only: serve model/network.py as of this git revision

    @property
    def label(self) -> str:
        label = self.name if self.workers == 1 else f"{self.name}-{self.workers}w"
        return label + (f"@{self.rev}" if self.rev else "")

    @classmethod
    def parse(cls, spec: str) -> System:
        spec, _, rev = spec.strip().partition("@")
        name, _, workers = spec.partition(":")
        if name not in NAMES:
            raise ValueError(f"unknown system {name!r}; one of {', '.join(NAMES)}")
        if rev and name != "torchserve":
            raise ValueError("@REV (model code from a git revision) is for torchserve only")
        return cls(name, int(workers or 1), rev or None)

    def unavailable(self) -> str | None:
        return ts.check_installed() if self.name == "torchserve" else None

    def launch(self, opts: Options, probe_body: bytes) -> Launch:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        py = [sys.executable, "-m"]
        if self.name == "textclf":
            env = {"TEXTCLF_MODEL_DIR": str(opts.model_dir), "TEXTCLF_HOST": "127.0.0.1",
                   "TEXTCLF_PORT": str(port), "TEXTCLF_WORKERS": str(self.workers),
                   "TEXTCLF_DEVICE": "cpu", "TEXTCLF_LOG_LEVEL": "warning",
                   **opts.textclf_env}
            return Launch(py + ["service"], env, base + "/predict", _get_ok(base + "/health/ready"))
        if self.name in ("naive", "constant", "bare"):
            argv = py + [f"bench.{self.name}_app", "--port", str(port),
                         "--workers", str(self.workers)]
            if self.name != "constant":
                argv += ["--model-dir", str(opts.model_dir)]
            return Launch(argv, {}, base + "/predict", _get_ok(base + "/health/ready"))
        return self._torchserve(opts, port, probe_body)

    def _torchserve(self, opts: Options, port: int, probe_body: bytes) -> Launch:
        workdir = opts.workdir / f"torchserve-{port}"
        workdir.mkdir(parents=True)
        ports = (port, free_port(), free_port())
        argv, env = ts.command(workdir, opts.model_dir, ports, self.workers, opts.ts_batch_size,
                               opts.ts_delay_ms, opts.ts_threads, opts.ts_dtype, rev=self.rev)
        url = f"http://127.0.0.1:{port}/predictions/{ts.MODEL_NAME}"
        return Launch(argv, env, url, lambda: ts.ready(url, probe_body), cwd=workdir)


def _get_ok(url: str) -> Callable[[], bool]:
    return lambda: http_status(url) == 200


def start(system: System, opts: Options, procs: Processes, probe_body: bytes,
          timeout_s: float = 180.0):  # noqa: ANN201 - (Popen, Launch, seconds to ready)
    launch = system.launch(opts, probe_body)
    log = opts.workdir / f"{system.label}.log"
    proc = procs.start(launch.argv, launch.env, log=log, cwd=launch.cwd)
    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{system.label} exited with {proc.returncode}:\n{tail}")
        if launch.is_ready():
            return proc, launch, time.perf_counter() - began
        time.sleep(0.1)
    procs.stop(proc)
    raise RuntimeError(f"{system.label} not ready after {timeout_s:.0f} s (log: {log})")

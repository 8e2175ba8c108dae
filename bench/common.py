"""Shared by the benchmarks: request texts, free ports, server processes that always get stopped.

Every server runs in its own process group (start_new_session), so stopping it also stops what
it started (uvicorn workers, TorchServe's Python workers); `Processes` stops all of them on
exit, on an exception and on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BBC_TEST = Path.home() / ".cache" / "textclf" / "datasets" / "bbc" / "test.jsonl"
FALLBACK_TEXTS = (
    "Shares in the bank rose sharply after it reported record profits for the year",
    "The striker scored twice in the second half as the champions won again at home",
    "The new film from the award winning director opens in cinemas across the country",
    "Ministers face questions in parliament over the cost of the new election plans",
    "The company launched a faster mobile phone with a better camera and longer battery",
)


def request_texts(words: int = 30, count: int = 200) -> list[str]:
    """`count` texts of exactly `words` words: the start of real BBC test articles when the
    dataset cache is there, else a fixed list repeated to length."""
    texts: list[str] = []
    if BBC_TEST.exists():
        with BBC_TEST.open(encoding="utf-8") as f:
            for line in f:
                tokens = json.loads(line)["text"].split()
                if len(tokens) >= words:
                    texts.append(" ".join(tokens[:words]))
                if len(texts) == count:
                    break
    if not texts:
        for i in range(count):
            base = (FALLBACK_TEXTS[i % 5] + " " + FALLBACK_TEXTS[(i + 1) % 5]).split()
            texts.append(" ".join((base * 3)[i % 7 : i % 7 + words]))
    return texts


def cpu_model() -> str:
    """The CPU's name as Linux reports it: figures from another CPU model differ (instruction
    sets decide, e.g., whether bfloat16 is native)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, poll_s: float = 0.02) -> float:
    """Seconds until `url` answers 200; raises if the process dies or time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} was ready")
        if http_status(url, timeout=1.0) == 200:
            return time.perf_counter() - start
        time.sleep(poll_s)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


class Processes:
    """Start process groups; stop every one of them, whatever happens (use as a context)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_all()
        sys.exit(128 + signum)

    def start(self, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd or REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace_s: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL after `grace_s`; also reaps the group's leftovers."""
        if proc in self.procs:
            self.procs.remove(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
        _signal_group(proc.pid, signal.SIGKILL)  # children that outlived the leader
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            print(f"warning: process {proc.pid} did not exit", file=sys.stderr)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, grace_s=5.0)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_pids(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (the server and whatever it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def proc_kb(pids: list[int], file: str, field: str) -> int:
    """The kB figure on the `field` line (e.g. "VmRSS:") of /proc/PID/`file`, summed over
    `pids`; processes that are gone count 0."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
                if line.startswith(field):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb


def pss_mb(pids: list[int]) -> float:
    """Summed proportional set size in MB: shared pages (libtorch) counted once in total."""
    return proc_kb(pids, "smaps_rollup", "Pss:") / 1024


def rss_mb(pids: list[int]) -> float:
    """Summed resident memory of `pids` in MB (from /proc/PID/status VmRSS)."""
    return proc_kb(pids, "status", "VmRSS:") / 1024

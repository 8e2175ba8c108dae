"""A live textclf for tests and benchmarks: `python -m service` as a subprocess on 127.0.0.1,
and a small model for it to serve (bench/overload.py, tests/test_reliability.py, test_shutdown.py,
test_fuzz.py)."""

from __future__ import annotations

import http.client
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, proc_kb

ROOT = Path(__file__).resolve().parents[1]

WORDS = ('the', 'match', 'ended', 'with', 'a', 'late', 'goal', 'team', 'won', 'cup', 'final',
         'shares', 'fell', 'as', 'market', 'closed', 'bank', 'raised', 'interest', 'rates', 'new',
         'phone', 'has', 'faster', 'chip', 'software', 'update', 'fixes', 'bug', 'players',
         'coach', 'season', 'profit', 'quarter', 'investors', 'launch', 'device', 'battery',
         'screen', 'league', 'title', 'stocks')


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc; psutil elsewhere if installed, else 0)."""
    kb = proc_kb([pid], "status", "VmRSS:")
    if kb:
        return kb * 1024
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # noqa: BLE001 - no way to measure here
        return 0


def build_artifact(path: Path, *, seed: int = 0, max_length: int = 256, embedding_dim: int = 64,
                   hidden_size: int = 128, name: str = "bench") -> Path:
    """A small random-weight model over WORDS: exact, repeatable, heavy enough to measure."""
    import torch

    from model.artifact import save_artifact
    from model.network import LSTMClassifier, ModelConfig
    from model.tokenizer import Vocabulary

    vocab = Vocabulary.build([" ".join(WORDS)])
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=len(vocab), num_classes=3, embedding_dim=embedding_dim,
                         hidden_size=hidden_size, num_layers=1, bidirectional=True, dropout=0.0)
    save_artifact(Path(path), LSTMClassifier(config).eval(), vocab, ["business", "sport", "tech"],
                  name=name, max_length=max_length)
    return Path(path)


def make_texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=words)) for _ in range(n)]


class LiveService:
    """`python -m service` as a subprocess on 127.0.0.1; stderr goes to a file (`log()`)."""

    def __init__(self, model_dir: Path | str, *, startup_timeout_s: float = 60.0,
                 **settings: Any) -> None:
        self.port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TEXTCLF_")}
        self.env = {**inherited, "TEXTCLF_MODEL_DIR": str(model_dir), "TEXTCLF_DEVICE": "cpu",
                    "TEXTCLF_HOST": "127.0.0.1", "TEXTCLF_PORT": str(self.port),
                    "TEXTCLF_LOG_LEVEL": "info",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.env.update({f"TEXTCLF_{k.upper()}": str(v) for k, v in settings.items()})
        self.startup_timeout_s = startup_timeout_s
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the process's life
            prefix="textclf-live-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> LiveService:
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/health/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"service not ready after {self.startup_timeout_s} s:\n{self.log()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """Sum of a metric's samples (all label sets), scraped from /metrics."""
        _, _, body = self.request("GET", "/metrics", headers=headers)
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log(self) -> str:
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> LiveService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

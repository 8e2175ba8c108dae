"""TEXTCLF_WORKERS=2: two server processes, one /metrics that adds up across them (prometheus-
client multiprocess mode), whichever worker answers the scrape. bench/workers.py does the same
under wrk load and adds a SIGHUP worker replacement."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import build_artifact

from bench.live import LiveService
from bench.workers import PREDICT, per_worker, scrape, total
from service import server
from service.server import memory_dir


def send_predicts(port: int, connections: int, per_connection: int) -> list[int]:
    """Statuses of /predict sent on `connections` keep-alive connections at once (the kernel
    hands each new connection to whichever worker accepts first)."""
    statuses: list[int] = []
    body = json.dumps({"inputs": ["the team won the cup final", "shares fell"]})

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per_connection):
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


@pytest.mark.integration
def test_two_workers_report_the_same_totals(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    with LiveService(build_artifact(tmp_path / "model"), workers=2, multiproc_dir=metrics_dir,
                     log_level="warning", startup_timeout_s=120) as live:
        time.sleep(1.0)  # /health/ready answered by one worker: let the other finish starting
        statuses: list[int] = []
        for _ in range(20):  # until both workers have served some (usually the first round)
            statuses += send_predicts(live.port, connections=8, per_connection=10)
            if len(served := per_worker(metrics_dir)) == 2 and all(served.values()):
                break
        assert set(statuses) == {200}
        sent = len(statuses)
        # A scrape flushes the worker that answers it; the other one's writes must already be
        # in the shared files (each worker flushes within a loop iteration of its last request).
        time.sleep(0.5)
        scrapes = [scrape(live.base_url) for _ in range(6)]  # each on a new connection
        assert [s.get(PREDICT) for s in scrapes] == [sent] * 6
        last = scrapes[-1]
        assert total(last, "textclf_predictions_total") == 2 * sent  # two texts per request
        assert total(last, "textclf_batch_size_sum") == 2 * sent
        assert total(last, "textclf_input_tokens_count") == 2 * sent
        assert last['textclf_request_duration_seconds_count{endpoint="/predict"}'] == sent
        assert last["textclf_ready"] == 1
        served = per_worker(metrics_dir)
        assert len(served) == 2 and sum(served.values()) == sent, served


@pytest.mark.integration
def test_the_metrics_directory_it_made_is_removed_at_exit(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TEXTCLF_MULTIPROC_DIR the workers' files go to a directory of their own, on tmpfs
    where there is one: it goes away with the service (one was left per start)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where tempfile.mkdtemp goes without /dev/shm
    parent = Path(memory_dir() or scratch)
    before = set(parent.glob("textclf-metrics-*"))
    live = LiveService(build_artifact(tmp_path / "model"), workers=2, log_level="warning",
                       startup_timeout_s=120)
    with live:
        made = set(parent.glob("textclf-metrics-*")) - before
        assert len(made) == 1 and any(made.pop().glob("counter_*.db"))
        assert live.stop() == 0
    assert not set(parent.glob("textclf-metrics-*")) - before


def test_worker_files_go_to_shared_memory_when_it_is_there(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "SHARED_MEMORY", tmp_path)
    assert memory_dir() == str(tmp_path)
    monkeypatch.setattr(server, "SHARED_MEMORY", tmp_path / "missing")
    assert memory_dir() is None  # tempfile's own choice then


OWN_AND_WAIT = """
import sys, time
from service import server
print(server.own_metrics_dir(sys.argv[1])[0], flush=True)
time.sleep(60)
"""


def test_a_directory_left_by_a_killed_service_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """The main process locks the directory it made; SIGKILL frees the lock, and the next start
    removes what the killed one could not. A live owner's directory, one without a lock file
    and one still being made are left alone."""
    owner = subprocess.Popen([sys.executable, "-c", OWN_AND_WAIT, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        killed = Path(owner.stdout.readline().strip())  # type: ignore[union-attr]
        assert killed.name.startswith("textclf-metrics-") and (killed / ".owner").exists()
        ours, fd = server.own_metrics_dir(str(tmp_path))
        older = tmp_path / "textclf-metrics-older"  # a textclf from before the lock file
        older.mkdir()
        staging = tmp_path / ".textclf-new-abc"  # being made: not yet locked
        staging.mkdir()
        assert server.remove_abandoned(str(tmp_path)) == []  # both owners are alive
        owner.kill()
        owner.wait(timeout=10)
        assert server.remove_abandoned(str(tmp_path)) == [str(killed)]
        assert not killed.exists() and Path(ours).is_dir() and older.is_dir() and staging.is_dir()
        os.close(fd)
        assert server.remove_abandoned(str(tmp_path)) == [ours]
    finally:
        owner.kill()
        owner.wait(timeout=10)

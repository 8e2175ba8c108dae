"""Hot reload on a live server: seven reloads under load with zero failed requests, SIGHUP,
and a bad artifact at start (exit 2, one line). In-process reload tests: test_reload.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from artifact_damage import CORRUPTIONS, config_of, flip_byte, point, tamper_vocab
from conftest import build_artifact

from bench.live import LiveService

ROOT = Path(__file__).resolve().parents[1]
KEY = "reload-test-key"
TEXT = "the team won the cup final"


# ----------------------------------------------------------------------------- live server

@pytest.mark.integration
def test_reload_under_load_zero_failures(tmp_path: Path) -> None:
    """Threads send /predict non-stop to a live server while it is reloaded 6 times (two
    artifacts, alternately) and once refused (bad artifact): every request answers 200, with
    the scores of one model or the other, never a mix."""
    dirs = [build_artifact(tmp_path / f"v{i}", seed=i, max_length=64) for i in (1, 2)]
    bad = build_artifact(tmp_path / "bad", seed=3)
    flip_byte(bad)
    link = tmp_path / "current"
    link.symlink_to(dirs[0])
    # over 50,000 characters in all: tokenized in a worker thread, which widens the window
    # between a request taking the model and submitting to its batcher (where a swap lands)
    texts = [TEXT, "shares fell as the market closed"] + ["the new phone has a faster chip " * 600] * 3
    body = json.dumps({"inputs": texts}).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}

    with LiveService(link, api_key=KEY, max_batch_delay_ms=5,
                     max_queue_size=100_000) as live:
        answers: dict[str, list] = {}
        for i, target in enumerate(dirs * 2):  # learn each model's answer
            point(link, target)
            assert live.request("POST", "/admin/reload", headers=headers)[0] == 200
            answers.setdefault(str(i % 2), json.loads(live.request("POST", "/predict", body,
                                                                   headers)[2]))
        point(link, dirs[0])
        assert live.request("POST", "/admin/reload", headers=headers)[0] == 200

        stop = threading.Event()
        results: list[tuple[int, bytes]] = []
        errors: list[str] = []

        def hammer() -> None:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
            while not stop.is_set():
                try:
                    conn.request("POST", "/predict", body=body, headers=headers)
                    response = conn.getresponse()
                    results.append((response.status, response.read()))
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
            conn.close()

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        reloads = []
        try:
            for i in range(7):
                time.sleep(0.3)
                if i == 3:
                    point(link, bad)
                    reloads.append(live.request("POST", "/admin/reload", headers=headers)[0])
                    point(link, dirs[0])
                else:
                    point(link, dirs[(i + 1) % 2])
                    reloads.append(live.request("POST", "/admin/reload", headers=headers)[0])
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        print(f"\n{len(results)} /predict during 7 reloads {reloads}: "
              f"{sum(s == 200 for s, _ in results)} x 200, {len(errors)} errors")
        assert reloads == [200, 200, 200, 409, 200, 200, 200]
        assert not errors, errors[:5]
        statuses = {status for status, _ in results}
        assert statuses == {200}, [r for r in results if r[0] != 200][:5]
        assert len(results) > 50
        known = list(answers.values())
        for _, raw in results:
            got = json.loads(raw)
            assert any(_close(got, expected) for expected in known), got
        assert "Traceback" not in live.log()


def _close(got: list, expected: list) -> bool:
    """Same labels in the same order, scores within float noise (batch composition varies)."""
    return all([a["label"] for a in x] == [b["label"] for b in y]
               and all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(x, y, strict=True))
               for x, y in zip(got, expected, strict=True))


@pytest.mark.integration
def test_sighup_reloads_and_refuses_bad_artifact(tmp_path: Path) -> None:
    v1, v2 = (build_artifact(tmp_path / f"v{i}", seed=i) for i in (1, 2))
    bad = build_artifact(tmp_path / "bad", seed=3)
    tamper_vocab(bad)
    link = tmp_path / "current"
    link.symlink_to(v1)
    with LiveService(link) as live:
        info = lambda: json.loads(live.request("GET", "/info")[2])  # noqa: E731
        assert info()["model_version"] == config_of(v1)["version"]

        point(link, v2)
        live.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while info()["model_version"] != config_of(v2)["version"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info()["model_version"] == config_of(v2)["version"]
        assert f'version="{config_of(v2)["version"]}"' in live.request("GET", "/metrics")[2].decode()

        point(link, bad)
        live.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload refused" not in live.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"reload refused, still serving \S+: .*vocab\.json: sha256", live.log())
        assert info()["model_version"] == config_of(v2)["version"]
        assert live.request("GET", "/health/ready")[0] == 200
        assert live.proc.poll() is None  # type: ignore[union-attr]
        assert live.stop() == 0


# ----------------------------------------------------------------------------- at start

@pytest.mark.integration
def test_bad_artifact_at_start_exits_with_one_line(tmp_path: Path) -> None:
    """`python -m service` refuses a bad artifact before opening the port: status 2 and one
    line naming TEXTCLF_MODEL_DIR and the file. Two cases, side by side (each start imports
    torch); every kind of damage is covered in-process by the reload tests, same loader."""
    cases = ["weights_truncated", "vocab_size_mismatch"]
    runs = {}
    for corruption in cases:
        path = build_artifact(tmp_path / corruption / "artifact")
        CORRUPTIONS[corruption][0](path)
        env = {**os.environ, "TEXTCLF_MODEL_DIR": str(path), "TEXTCLF_DEVICE": "cpu",
               "TEXTCLF_HOST": "127.0.0.1", "TEXTCLF_PORT": "1",  # never opened
               "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
        runs[corruption] = (path, subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT,
                                                   env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, text=True))
    for corruption, (path, proc) in runs.items():
        _, stderr = proc.communicate(timeout=60)
        _, named_file, words = CORRUPTIONS[corruption]
        assert proc.returncode == 2, (corruption, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (corruption, stderr)
        assert lines[0].startswith("textclf: TEXTCLF_MODEL_DIR: ")
        assert str(path / named_file) in lines[0] and words in lines[0], lines[0]

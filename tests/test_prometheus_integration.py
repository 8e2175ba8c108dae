"""The service under uvicorn, scraped by a real Prometheus server; promtool lints /metrics.

Needs Debian's `prometheus` package (`apt-get install -y prometheus`; .ci/run installs it).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.common import free_port

pytestmark = pytest.mark.integration


def require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} not found: install it with `apt-get install -y prometheus`"
    return path


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready after {seconds}s")


def start(cmd: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def live_service(artifact_dir, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTCLF_")} | {
        "TEXTCLF_MODEL_DIR": str(artifact_dir), "TEXTCLF_DEVICE": "cpu"}
    proc = start([sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app",
                  "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "uvicorn.log")
    try:
        wait_for(f"http://127.0.0.1:{port}/health/ready")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def test_promtool_accepts_the_exposition(live_service):
    httpx.post(f"http://{live_service}/predict", json={"inputs": ["goal", "chip"]}, timeout=10)
    exposition = httpx.get(f"http://{live_service}/metrics", timeout=10).text
    check = subprocess.run([require("promtool"), "check", "metrics"], input=exposition,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_service(live_service, tmp_path):
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: textclf
    static_configs:
      - targets: ["{live_service}"]
""")
    prometheus = start([require("prometheus"), f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}"], log=tmp_path / "prom.log")
    try:
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        wait_for(f"http://127.0.0.1:{prom_port}/-/ready")
        for _ in range(3):
            httpx.post(f"http://{live_service}/predict", json={"inputs": "the team won"}, timeout=10)
        deadline, up, requests = time.monotonic() + 60, [], []
        while time.monotonic() < deadline and not (up and requests):
            time.sleep(1)
            up = query(api, 'up{job="textclf"} == 1')
            requests = query(api, 'textclf_requests_total{endpoint="/predict",status="200"}')
        assert up, "Prometheus never saw the textclf target up"
        assert requests and float(requests[0]["value"][1]) >= 3
        assert query(api, "textclf_model_info")
    finally:
        stop(prometheus)


def query(api: str, promql: str) -> list:
    reply = httpx.get(f"{api}/query", params={"query": promql}, timeout=5).json()
    assert reply["status"] == "success", reply
    return reply["data"]["result"]

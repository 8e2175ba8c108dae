"""Static checks of the Kubernetes manifests (deploy/k8s): schema validation for the newest
and an older cluster version (kubernetes-validate), hardening, probes, GPU scheduling, and the
wiring of Service, HPA, PDB, ServiceMonitor and kustomization."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from deploy_files import K8S, PORT, UID, load, load_all

# kubernetes-validate ships schemas up to its own release; also check an older cluster version.
K8S_MIN_VERSION = "1.27.0"


def _k8s_validate() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install kubernetes-validate")


def _k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml"))}


SCHEMA_LESS = {"kustomization.yaml", "servicemonitor.yaml"}  # no upstream schema: checked by hand


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")
                                        if p.name not in SCHEMA_LESS))
def test_k8s_manifest_validates(name: str) -> None:
    kv = _k8s_validate()
    docs = load_all(K8S / name)
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
    sm = load(K8S / "servicemonitor.yaml")
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
    kust = load(K8S / "kustomization.yaml")
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

"""Static checks of the monitoring files: Prometheus config, alert rules and their unit tests
(promtool, from Debian's prometheus package), and the Grafana dashboard's structure and queries.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy_files import DEPLOY, load, promtool, run, yaml_module

# Metrics the service exports (service/metrics.py) that the dashboard must show.
DASHBOARD_METRICS = [
    "textclf_requests_total", "textclf_request_duration_seconds_bucket",
    "textclf_queue_depth", "textclf_batch_size_bucket", "textclf_inference_duration_seconds_bucket",
    "textclf_oov_ratio", "textclf_prediction_confidence", "textclf_predictions_total",
    "textclf_queue_duration_seconds_bucket", "textclf_connections_rebalanced_total",
]


# --------------------------------------------------------------------------- Prometheus
def test_promtool_check_config() -> None:
    run([promtool(), "check", "config", "deploy/prometheus.yml"])


def test_promtool_check_rules() -> None:
    run([promtool(), "check", "rules", "deploy/alerts.yml"])


def test_promtool_alert_unit_tests() -> None:
    """deploy/alerts_test.yml: every alert fires on synthetic series, none on healthy ones."""
    proc = run([promtool(), "test", "rules", "deploy/alerts_test.yml"])
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_alerts_cover_the_failure_modes() -> None:
    rules = {r["alert"]: r for g in load(DEPLOY / "alerts.yml")["groups"] for r in g["rules"]
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
    tested = {t["alertname"] for case in load(DEPLOY / "alerts_test.yml")["tests"]
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
    path.write_text(yaml_module().safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool(), "check", "rules", str(path)])

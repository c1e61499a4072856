"""The Grafana dashboards (ops/dashboards/) are what their generator renders,
and every expression in them, and in the alert rules, names metrics that exist.

"Exist" means: exported by a process of the platform (a Counter, Gauge,
Histogram or custom collector family in services/, shared/ or gateway/,
with the suffixes Prometheus gives them), recorded by a rule of
ops/prometheus/rules/, Prometheus's own (`up`, `ALERTS`), the process
collector's, or RabbitMQ's rabbitmq_prometheus plugin's (listed below: the
aggregated metrics it serves by default).
"""

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from ops.dashboards import build

ROOT = Path(__file__).resolve().parents[2]

RULES = sorted((ROOT / "ops" / "prometheus" / "rules").glob("*.yml"))
SOURCES = [
    path
    for directory in ("services", "shared", "gateway")
    for path in (ROOT / directory).rglob("*.py")
]
DEFINED = re.compile(
    r"\b(Counter|Gauge|Histogram|GaugeMetricFamily|CounterMetricFamily)\(\s*\"([a-z_:][a-z0-9_:]*)\""
)
SUFFIXES = {
    "Counter": ("_total",),
    "CounterMetricFamily": ("_total",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
}
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}
RABBITMQ = {
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
    "rabbitmq_connections",
    "rabbitmq_global_messages_unroutable_returned_total",
    "rabbitmq_alarms_memory_used_watermark",
    "rabbitmq_alarms_free_disk_space_watermark",
}


def exported() -> set[str]:
    names = set()
    for path in SOURCES:
        for kind, name in DEFINED.findall(path.read_text()):
            base = name.removesuffix("_total") if kind.startswith("Counter") else name
            names |= {base + suffix for suffix in SUFFIXES[kind]}
    return names


def recorded() -> set[str]:
    return {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


KNOWN = exported() | recorded() | PROMETHEUS_OWN | PROCESS | RABBITMQ


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def walk(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.Call):
            for argument in node.args:
                walk(argument)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(
            node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
        ):
            walk(node.expr)

    # Grafana's variables are not PromQL: give them a value.
    walk(promql_parser.parse(expression.replace("$service", "accounts")))
    return names


def dashboard_expressions(document: dict) -> list[tuple[str, str]]:
    found = []
    for panel in document["panels"]:
        for item in panel.get("targets", []):
            found.append((panel["title"], item["expr"]))
    for variable in document.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        if query.startswith("label_values("):
            metric = query[len("label_values(") :].split(",")[0]
            found.append((f"variable {variable['name']}", metric))
    return found


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_the_json_is_what_the_generator_renders(name):
    assert (build.HERE / f"{name}.json").read_text() == build.render(name), (
        f"ops/dashboards/{name}.json is stale: run python ops/dashboards/build.py"
    )


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_every_panel_queries_metrics_that_exist(name):
    document = json.loads((build.HERE / f"{name}.json").read_text())
    assert document["uid"] and document["title"] and document["panels"]
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in document["panels"]:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no query"
    unknown = {
        (title, metric)
        for title, expression in dashboard_expressions(document)
        for metric in metric_names(expression)
        if metric not in KNOWN
    }
    assert not unknown, f"metrics no process exports: {sorted(unknown)}"


def test_every_rule_queries_metrics_that_exist():
    unknown = set()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric in metric_names(rule["expr"]):
                    if metric not in KNOWN:
                        unknown.add((path.name, rule.get("alert") or rule.get("record"), metric))
    assert not unknown, f"metrics no process exports: {sorted(unknown)}"


def test_the_catalogue_sees_the_metrics_it_should():
    # A guard on the guard: the scan finds what shared/metrics.py and the
    # services define, suffixes included.
    assert {
        "service_entrypoint_calls_total",
        "service_entrypoint_duration_seconds_bucket",
        "outbox_oldest_pending_age_seconds",
        "transfers_ended_total",
        "gateway_http_requests_total",
        "risk_reviews_pending",
        "reconciliation_discrepancies",
    } <= KNOWN
    assert "made_up_metric_total" not in KNOWN

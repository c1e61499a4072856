"""Grafana dashboards for the platform, written with grafanalib: `python ops/dashboards/build.py`.

Writes ops/dashboards/<name>.json, which the Swarm stack (the grafana
service) and k8s/monitoring (the grafana-dashboards ConfigMap) provision.
The JSON is generated, never edited: change this file and run it again;
`make test` fails while a JSON file differs from what this renders, or
while any expression names a metric that no process exports
(tests/unit/test_dashboards.py).

    overview   the SLOs (docs/SLO.md): each SLI against its objective, the
               error budget left, money stuck, alerts firing
    saga       transfers per second by outcome, failures by reason, the
               saga's duration, pending and overdue transfers, outboxes,
               retries and parked messages per handler
    services   per service (a variable): RED metrics of every entrypoint,
               the database pool, provider circuits; the gateway's routes
    broker     RabbitMQ's queues, consumers, connections and alarms (its
               rabbitmq_prometheus plugin), parked messages per service
"""

import json
import sys
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    Stat,
    Target,
    Template,
    Templating,
    Threshold,
    Time,
    TimeSeries,
)

HERE = Path(__file__).resolve().parent
DATASOURCE = "Prometheus"
WIDTH = 24

# The SLO ratios as slo.yml records them.
SLOS = (
    ("API availability", "api_availability", 0.001),
    ("API latency (reads under 500 ms)", "api_latency", 0.01),
    ("Transfer settlement (internal, within 10 s)", "transfer_settlement", 0.01),
)


def target(expr: str, legend: str = "", ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


class Layout:
    """Panels placed left to right, row by row."""

    def __init__(self):
        self.x = self.y = self.row_height = 0
        self.panels = []

    def add(self, panel_type, title: str, targets, width: int = 12, height: int = 8, **options):
        if self.x + width > WIDTH:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        panel = panel_type(
            title=title,
            dataSource=DATASOURCE,
            targets=targets,
            gridPos=GridPos(h=height, w=width, x=self.x, y=self.y),
            **options,
        )
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def dashboard(uid: str, title: str, description: str, layout: Layout, templating=None):
    return Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=["fintech"],
        timezone="utc",
        time=Time("now-6h", "now"),
        refresh="30s",
        panels=layout.panels,
        templating=templating or Templating(),
    ).auto_panel_ids()


def overview() -> Dashboard:
    page = Layout()
    for name, sli, budget in SLOS:
        page.add(
            Stat,
            f"{name}: bad share, last hour (objective {budget:.1%})",
            [target(f"slo:{sli}_errors:ratio_rate1h")],
            width=8,
            height=5,
            format="percentunit",
            decimals=3,
            thresholds=[
                Threshold("green", 0, 0.0),
                Threshold("orange", 1, budget),
                Threshold("red", 2, budget * 6),
            ],
        )
    for name, sli, budget in SLOS:
        page.add(
            TimeSeries,
            f"{name}: budget burn rate (1 = spends 30 days' budget in 30 days)",
            [
                target(f"slo:{sli}_errors:ratio_rate1h / {budget}", "1 h", "A"),
                target(f"slo:{sli}_errors:ratio_rate6h / {budget}", "6 h", "B"),
                target(f"slo:{sli}_errors:ratio_rate3d / {budget}", "3 d", "C"),
            ],
            width=8,
        )
    page.add(
        Stat,
        "Transfers pending past their deadline (money stuck)",
        [target("max(transfers_overdue)")],
        width=8,
        height=5,
        thresholds=[Threshold("green", 0, 0.0), Threshold("red", 1, 1.0)],
    )
    page.add(
        Stat,
        "Alerts firing",
        [target('count(ALERTS{alertstate="firing"}) or vector(0)')],
        width=8,
        height=5,
        thresholds=[Threshold("green", 0, 0.0), Threshold("red", 1, 1.0)],
    )
    page.add(
        TimeSeries,
        "Transfers ended per second, by status",
        [target("sum by (status) (rate(transfers_ended_total[5m]))", "{{status}}")],
        width=8,
        height=5,
    )
    return dashboard(
        "fintech-overview",
        "Fintech: overview and SLOs",
        "The objectives of docs/SLO.md, their error budgets, and money stuck.",
        page,
    )


def saga() -> Dashboard:
    page = Layout()
    page.add(
        TimeSeries,
        "Transfers ended per second, by kind and status",
        [target("sum by (kind, status) (rate(transfers_ended_total[5m]))", "{{kind}} {{status}}")],
    )
    page.add(
        TimeSeries,
        "Failures per second, by reason",
        [
            target(
                'sum by (reason) (rate(transfers_ended_total{status="failed"}[5m]))', "{{reason}}"
            )
        ],
    )
    page.add(
        TimeSeries,
        "Request to end, p50 and p99, by kind",
        [
            target(
                "histogram_quantile(0.5, sum by (kind, le) "
                "(rate(transfer_saga_duration_seconds_bucket[5m])))",
                "p50 {{kind}}",
                "A",
            ),
            target(
                "histogram_quantile(0.99, sum by (kind, le) "
                "(rate(transfer_saga_duration_seconds_bucket[5m])))",
                "p99 {{kind}}",
                "B",
            ),
        ],
        unit="s",
    )
    page.add(
        TimeSeries,
        "Pending and overdue transfers (stuck: overdue)",
        [
            target("max(transfers_pending)", "pending", "A"),
            target("max(transfers_overdue)", "overdue", "B"),
        ],
    )
    page.add(
        TimeSeries,
        "Outbox: oldest unpublished event, by service",
        [target("max by (service) (outbox_oldest_pending_age_seconds)", "{{service}}")],
        unit="s",
    )
    page.add(
        TimeSeries,
        "Saga step retries per second, by handler",
        [target("sum by (handler) (rate(saga_step_retries_total[5m]))", "{{handler}}")],
    )
    page.add(
        TimeSeries,
        "Parked messages, by service",
        [target("max by (service) (saga_parked_messages)", "{{service}}")],
    )
    page.add(
        TimeSeries,
        "Duplicate deliveries dropped per second, by handler",
        [target("sum by (handler) (rate(inbox_duplicates_total[5m]))", "{{handler}}")],
    )
    page.add(
        TimeSeries,
        "Risk reviews waiting, and the oldest's age",
        [
            target("max(risk_reviews_pending)", "pending", "A"),
            target("max(risk_oldest_pending_review_age_seconds) / 3600", "oldest (hours)", "B"),
        ],
        width=24,
    )
    return dashboard(
        "fintech-saga",
        "Fintech: the transfer saga",
        "Throughput, latency, failures by reason, stuck transfers, outboxes and parked steps.",
        page,
    )


def services() -> Dashboard:
    page = Layout()
    chosen = 'service=~"$service"'
    page.add(
        TimeSeries,
        "Calls per second, by entrypoint",
        [
            target(
                "sum by (service, entrypoint) "
                f"(rate(service_entrypoint_calls_total{{{chosen}}}[5m]))",
                "{{service}} {{entrypoint}}",
            )
        ],
    )
    page.add(
        TimeSeries,
        "Errors per second, by entrypoint and type",
        [
            target(
                "sum by (service, entrypoint, error) "
                f"(rate(service_entrypoint_errors_total{{{chosen}}}[5m]))",
                "{{service}} {{entrypoint}} {{error}}",
            )
        ],
    )
    page.add(
        TimeSeries,
        "Duration p99, by entrypoint",
        [
            target(
                "histogram_quantile(0.99, sum by (service, entrypoint, le) "
                f"(rate(service_entrypoint_duration_seconds_bucket{{{chosen}}}[5m])))",
                "{{service}} {{entrypoint}}",
            )
        ],
        unit="s",
    )
    page.add(
        TimeSeries,
        "Database connections in use / pool size, by instance",
        [
            target(
                f"db_pool_connections_in_use{{{chosen}}} / db_pool_size{{{chosen}}}",
                "{{service}} {{instance}}",
            )
        ],
        unit="percentunit",
    )
    page.add(
        TimeSeries,
        "Provider circuits (0 closed, 1 half-open, 2 open)",
        [target("max by (service, provider) (provider_circuit_state)", "{{service}} {{provider}}")],
    )
    page.add(
        TimeSeries,
        "Process CPU, by instance",
        [target(f"rate(process_cpu_seconds_total{{{chosen}}}[5m])", "{{service}} {{instance}}")],
        unit="percentunit",
    )
    page.add(
        TimeSeries,
        "Gateway: requests per second, by route and status",
        [
            target(
                "sum by (endpoint, status) (rate(gateway_http_requests_total[5m]))",
                "{{endpoint}} {{status}}",
            )
        ],
    )
    page.add(
        TimeSeries,
        "Gateway: p99 latency, by route",
        [
            target(
                "histogram_quantile(0.99, sum by (endpoint, le) "
                "(rate(gateway_http_request_duration_seconds_bucket[5m])))",
                "{{endpoint}}",
            )
        ],
        unit="s",
    )
    variable = Template(
        name="service",
        label="service",
        query="label_values(service_entrypoint_calls_total, service)",
        dataSource=DATASOURCE,
        includeAll=True,
        multi=True,
        default="$__all",
    )
    return dashboard(
        "fintech-services",
        "Fintech: services (RED)",
        "Rate, errors and duration of every entrypoint, per service; the gateway's routes.",
        page,
        Templating(list=[variable]),
    )


def broker() -> Dashboard:
    page = Layout()
    page.add(
        TimeSeries,
        "Messages ready and unacknowledged (every queue)",
        [
            target("sum(rabbitmq_queue_messages_ready)", "ready", "A"),
            target("sum(rabbitmq_queue_messages_unacked)", "unacknowledged", "B"),
        ],
    )
    page.add(
        TimeSeries,
        "Parked (dead-lettered) messages, by service",
        [target("max by (service) (saga_parked_messages)", "{{service}}")],
    )
    page.add(
        TimeSeries,
        "Consumers and connections",
        [
            target("sum(rabbitmq_queue_consumers)", "consumers", "A"),
            target("sum(rabbitmq_connections)", "connections", "B"),
        ],
    )
    page.add(
        TimeSeries,
        "Unroutable messages returned per second (EventsUnroutable)",
        [target("sum(rate(rabbitmq_global_messages_unroutable_returned_total[5m]))", "returned")],
    )
    page.add(
        Stat,
        "Resource alarms (memory, disk): publishers blocked while 1",
        [
            target("max(rabbitmq_alarms_memory_used_watermark)", "memory", "A"),
            target("max(rabbitmq_alarms_free_disk_space_watermark)", "disk", "B"),
        ],
        width=24,
        height=5,
        thresholds=[Threshold("green", 0, 0.0), Threshold("red", 1, 1.0)],
    )
    return dashboard(
        "fintech-broker",
        "Fintech: broker",
        "RabbitMQ's queues, consumers and alarms, and the saga's parked messages.",
        page,
    )


DASHBOARDS = {"overview": overview, "saga": saga, "services": services, "broker": broker}


def render(name: str) -> str:
    document = DASHBOARDS[name]().to_json_data()
    return json.dumps(document, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main() -> int:
    for name in DASHBOARDS:
        (HERE / f"{name}.json").write_text(render(name))
        print(f"wrote ops/dashboards/{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

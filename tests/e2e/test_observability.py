"""Prometheus scrapes every process of the running platform and sees the saga move;
one transfer is one trace, from the gateway's request to the last consumer.

A real Prometheus (Debian's, as `make run` starts it: ops/scripts/prometheus.py
builds the same configuration) scrapes the e2e platform every second with
the project's rules. The rules are loaded with every `for:` cut to two
seconds: their timing is promtool's to test (ops/prometheus/tests/); here
what matters is that each expression finds the metrics the processes
really export, and that an alert fires when a process really stops.
"""

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from ops.private_broker import free_port
from ops.scripts import prometheus as local_prometheus
from shared import traces as tracing_cli
from tests.e2e.conftest import ROOT, SERVICES
from tests.e2e.helpers import Customer, make_admin


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expression: str) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def value(self, expression: str) -> float:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, expression: str, predicate, timeout: float = 30.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expression)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what or expression}: still {result} after {timeout:.0f} s")
            time.sleep(0.5)

    def at_least(self, expression: str, minimum: float, what: str):
        """Wait until the (single-series) expression reaches `minimum`."""
        return self.wait_for(
            expression,
            lambda result: bool(result) and float(result[0]["value"][1]) >= minimum,
            what=what,
        )

    def firing(self) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/alerts", timeout=5)
        return [a for a in answer.json()["data"]["alerts"] if a["state"] == "firing"]


@pytest.fixture(scope="module")
def prometheus(api, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: ops/scripts/ensure-prometheus-tools.sh installs "
            "Debian's package (make test runs it as root)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("prometheus")
    rules = []
    for path in local_prometheus.rule_files():
        quick = home / path.name
        quick.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 2s", path.read_text()))
        rules.append(quick)
    config = local_prometheus.configuration(local_prometheus.targets(api.env), rules, "1s")
    (home / "prometheus.yml").write_text(local_prometheus.yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=(home / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    client = Prometheus(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{client.url}/-/ready", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"prometheus did not start: {(home / 'prometheus.log').read_text()}")
        time.sleep(0.3)
    yield client
    process.terminate()
    process.wait(timeout=20)


def test_every_process_is_scraped(prometheus):
    expected = {"gateway", *SERVICES}
    prometheus.wait_for(
        "up == 1",
        lambda result: {series["metric"]["service"] for series in result} == expected,
        what="every target up",
    )


ENDED = 'sum(transfers_ended_total{service="transactions",kind="internal",status="completed"})'
ASSESSED = (
    'sum(service_entrypoint_calls_total{service="risk",'
    'entrypoint="handle_transfer_requested",outcome="ok"})'
)


def test_the_saga_metrics_move_with_a_transfer(api, prometheus):
    prometheus.wait_for("up{service='transactions'} == 1", bool)
    before_ended, before_assessed = prometheus.value(ENDED), prometheus.value(ASSESSED)
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("20.00"), bob.open()
    view = alice.settled(alice.transfer(source, target, "5.00"))
    assert view["status"] == "completed", view

    # Each target is scraped on its own clock: wait for each figure.
    prometheus.at_least(ENDED, before_ended + 1, "transfers_ended_total after a transfer")
    prometheus.at_least(ASSESSED, before_assessed + 1, "risk's count of assessments")
    prometheus.at_least(
        'sum(transfer_saga_duration_seconds_count{kind="internal",status="completed"})',
        1,
        "the saga's duration histogram",
    )
    # The gateway counts by route template, not by URL.
    prometheus.at_least(
        'sum(gateway_http_requests_total{endpoint="/v1/transfers",method="POST"})',
        1,
        "the gateway's count of POST /v1/transfers",
    )
    # What every service reads at scrape time is there for each of them.
    for metric in ("outbox_pending_events", "db_pool_size"):
        found = {s["metric"]["service"] for s in prometheus.query(metric)}
        assert found >= {"accounts", "transactions", "risk"}, (metric, found)
    assert {s["metric"]["service"] for s in prometheus.query("saga_parked_messages")} >= {
        "accounts",
        "transactions",
        "risk",
        "payments",
        "notifications",
        "analytics",
    }


def test_a_stopped_service_fires_its_alert(api, prometheus):
    prometheus.wait_for("up{service='analytics'} == 1", bool)
    api.kill("analytics")
    try:
        deadline = time.monotonic() + 30
        while True:
            firing = [
                alert
                for alert in prometheus.firing()
                if alert["labels"]["alertname"] == "ServiceDown"
                and alert["labels"]["service"] == "analytics"
            ]
            if firing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert firing, "ServiceDown did not fire for a killed analytics process"
        assert firing[0]["labels"]["severity"] == "page"
        assert firing[0]["annotations"]["runbook_url"] == "docs/RUNBOOKS.md#servicedown"
    finally:
        api.restart_service("analytics")
    prometheus.wait_for(
        "up{service='analytics'} == 1", bool, timeout=60, what="analytics back after restart"
    )
    # Leave the platform as found: the killed process's heartbeat gone from
    # what operators see (GET /v1/admin/services), one live instance left.
    token = make_admin(api)[1]
    deadline = time.monotonic() + 60
    while True:
        items = api.get("/v1/admin/services", token=token).json()["items"]
        [analytics] = [item for item in items if item["service"] == "analytics"]
        details = analytics["instance_details"]
        if len(details) == 1 and details[0]["ready"]:
            break
        assert time.monotonic() < deadline, analytics
        time.sleep(0.5)


def test_a_transfer_is_one_trace_from_request_to_the_last_consumer(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("20.00"), bob.open()
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"  # as a client's tracer sends it
    response = alice.post(
        "/v1/transfers",
        {"from_account_id": source, "to_account_id": target, "amount": "2.00", "currency": "EUR"},
        key=str(uuid.uuid4()),
        headers={"traceparent": parent, "Prefer": "wait=10"},
    )
    assert response.status_code == 201, response.text
    transfer_id = response.json()["transfer_id"]
    expected = {
        "POST /v1/transfers",
        "transactions.create_transfer",
        "risk.handle_transfer_requested",
        "accounts.handle_transfer_approved",
        "transactions.handle_transfer_posted",
        "notifications.on_transfer_completed",
        "analytics.handle_transfer_completed",
    }
    traces = Path(api.env["TRACES_DIR"])
    deadline = time.monotonic() + 20
    while True:
        found = tracing_cli.traces_of(tracing_cli.read_spans(traces), transfer_id)
        names = {span["name"] for spans in found.values() for span in spans}
        if expected <= names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert list(found) == ["ab" * 16], f"one trace, the client's: {list(found)}"
    assert expected <= names, sorted(names)
    assert any(name.startswith("publish transfer_requested") for name in names), sorted(names)
    assert any(name.startswith("provider ") for name in names), sorted(names)  # the e-mail
    # The tree: every span but the client's parent has its parent in the trace.
    [spans] = found.values()
    ids = {span["span_id"] for span in spans}
    orphans = [s["name"] for s in spans if s["parent_id"] not in ids and s["parent_id"] != "cd" * 8]
    assert orphans == [], orphans
    printed = subprocess.run(
        [sys.executable, "-m", "shared.traces", transfer_id, "--dir", str(traces)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert printed.startswith(f"trace {'ab' * 16}: "), printed
    assert "risk.handle_transfer_requested [consumer]" in printed, printed
    # JSON log lines written inside a span carry its ids.
    assert f'"trace_id": "{"ab" * 16}"' in api.log_text("gateway")

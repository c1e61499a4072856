"""analytics on the real broker and PostgreSQL.

Transfer outcomes are published the way transactions' outbox relay
publishes them (to "transactions.events", routed by event type, with the
correlation id in nameko's context header). Every test uses its own users,
so messages left in a durable queue by another test cannot change what it
sees.
"""

import socket
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
from flask import g, request

from gateway.app import create_app
from gateway.tokens import Principal
from services.accounts.service import AccountsService
from services.analytics.service import AnalyticsService
from services.risk.service import RiskService
from services.transactions.service import TransactionsService
from shared import contracts
from shared.errors import InvalidInput
from shared.events import envelope
from tests.integration.helpers import wait_for

PROJECTIONS = {
    "projected_transfers": "transfer_id",
    "monthly_totals": "user_id, month, currency",
    "monthly_categories": "user_id, month, currency, category",
    "flows": "transfer_id, user_id, direction",
    "anomalies": "transfer_id, user_id",
    "transfer_totals": "outcome, kind, currency, reason",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_analytics(container_factory, config):
    def start(metrics_port=0):
        container = container_factory(
            AnalyticsService, {**config, "ANALYTICS_METRICS_PORT": metrics_port}
        )
        container.start()
        return container

    return start


@pytest.fixture
def analytics(start_analytics):
    return start_analytics()


@pytest.fixture
def publish(publish_event):
    return lambda message: publish_event(contracts.TRANSACTIONS, message)


@pytest.fixture
def handled(sql):
    """Wait until analytics has logged these events."""

    def wait(*messages, timeout=15.0):
        ids = {m["event_id"] for m in messages}
        query = "SELECT event_id FROM analytics_events WHERE event_id = ANY(:ids)"
        wait_for(
            lambda: {row[0] for row in sql("analytics", query, ids=list(ids))} == ids,
            timeout,
            interval=0.05,
            what=f"analytics handling {len(ids)} event(s)",
        )

    return wait


def outcome(
    event_type, kind, owner, amount, *, to_owner=None, reference=None, currency="EUR",
    at=None, to_account=None, reason=None,
):  # fmt: skip
    transfer_id = str(uuid.uuid4())
    request_payload = {
        "transfer_id": transfer_id,
        "kind": kind,
        "owner_id": owner,
        "amount": amount,
        "currency": currency,
        "from_account_id": None if kind == contracts.KIND_DEPOSIT else str(uuid.uuid4()),
        "to_account_id": None if kind == contracts.KIND_PAYOUT else to_account or str(uuid.uuid4()),
        "reference": reference,
        "source": {"type": "card", "token": "tok_ok"} if kind == contracts.KIND_DEPOSIT else None,
        "beneficiary": {"name": "Ben", "iban": "DE89370400440532013000"}
        if kind == contracts.KIND_PAYOUT
        else None,
        "deadline": None,
    }
    message = envelope(
        event_type,
        {
            "transfer_id": transfer_id,
            "kind": kind,
            "status": "completed" if event_type == contracts.TRANSFER_COMPLETED else "failed",
            "reason": reason,
            "owner_id": owner,
            "to_owner_id": to_owner,
            "amount": amount,
            "currency": currency,
            "transfer": request_payload,
        },
        correlation_id=f"it-{uuid.uuid4()}",
    )
    if at:
        message["occurred_at"] = at
    return message


def completed(*args, **kwargs):
    return outcome(contracts.TRANSFER_COMPLETED, *args, **kwargs)


def failed(*args, **kwargs):
    return outcome(contracts.TRANSFER_FAILED, *args, **kwargs)


def user() -> str:
    return str(uuid.uuid4())


def test_summaries_per_month_and_category(analytics, publish, handled, rpc):
    alice, bob = user(), user()
    messages = [
        completed(contracts.KIND_DEPOSIT, alice, 250_000, at="2026-10-02T08:00:00+00:00"),
        completed(
            contracts.KIND_INTERNAL, alice, 90_000, to_owner=bob, reference="Rent October",
            at="2026-10-03T08:00:00+00:00",
        ),
        completed(
            contracts.KIND_INTERNAL, alice, 3_245, to_owner=bob, reference="REWE groceries",
            at="2026-10-20T08:00:00+00:00",
        ),
        completed(contracts.KIND_PAYOUT, alice, 10_000, at="2026-10-31T23:59:59+00:00"),
        completed(contracts.KIND_PAYOUT, alice, 7_000, at="2026-11-01T00:00:00+00:00"),
        completed(contracts.KIND_DEPOSIT, alice, 5_000, currency="USD", at="2026-10-05T08:00:00Z"),
    ]  # fmt: skip
    for message in messages:
        publish(message)
    handled(*messages)

    october = rpc.analytics.summary(alice, "2026-10")
    assert october["month"] == "2026-10"
    eur = october["currencies"]["EUR"]
    assert (eur["inflow"], eur["outflow"], eur["net"], eur["count"]) == (
        250_000,
        103_245,
        146_755,
        4,
    )
    assert eur["by_category"] == {
        "top-up": {"inflow": 250_000, "outflow": 0, "net": 250_000, "count": 1},
        "rent": {"inflow": 0, "outflow": 90_000, "net": -90_000, "count": 1},
        "groceries": {"inflow": 0, "outflow": 3_245, "net": -3_245, "count": 1},
        "payout": {"inflow": 0, "outflow": 10_000, "net": -10_000, "count": 1},
    }
    assert october["currencies"]["USD"]["inflow"] == 5_000
    november = rpc.analytics.summary(alice, "2026-11")["currencies"]
    assert list(november) == ["EUR"]
    assert november["EUR"]["outflow"] == 7_000
    bob_october = rpc.analytics.summary(bob, "2026-10")["currencies"]["EUR"]
    assert (bob_october["inflow"], bob_october["outflow"], bob_october["count"]) == (93_245, 0, 2)
    assert set(bob_october["by_category"]) == {"rent", "groceries"}


def test_a_bad_month_or_user_is_invalid_input(analytics, rpc):
    with pytest.raises(InvalidInput):
        rpc.analytics.summary(user(), "2026-13")
    with pytest.raises(InvalidInput):
        rpc.analytics.summary("not-a-user-id", "2026-01")
    with pytest.raises(InvalidInput):
        rpc.analytics.anomalies(user(), 0)


def test_a_duplicate_delivery_counts_once(analytics, publish, handled, rpc, sql):
    alice = user()
    message = completed(contracts.KIND_DEPOSIT, alice, 1_000, at="2026-09-01T10:00:00+00:00")
    publish(message)
    handled(message)
    publish(message)  # the relay published it again
    # The same transfer's outcome under a new event id (announced twice).
    again = {**message, "event_id": str(uuid.uuid4())}
    publish(again)
    later = completed(contracts.KIND_DEPOSIT, alice, 10, at="2026-09-02T10:00:00+00:00")
    publish(later)
    handled(again, later)
    time.sleep(0.5)  # let a slow duplicate finish, if it were to count
    totals = rpc.analytics.summary(alice, "2026-09")["currencies"]["EUR"]
    assert (totals["inflow"], totals["count"]) == (1_010, 2)
    assert sql(
        "analytics",
        "SELECT count(*) FROM inbox WHERE event_id = :e",
        e=message["event_id"],
    ) == [(1,)]


def test_an_unusual_outflow_is_flagged_against_a_crafted_history(analytics, publish, handled, rpc):
    alice = user()
    history = [
        completed(
            contracts.KIND_INTERNAL, alice, amount, to_owner=user(), reference="Coffee",
            at=f"2026-08-{day:02d}T09:00:00+00:00",
        )
        for day, amount in enumerate([1_900, 2_000, 2_100, 2_000, 1_950, 2_050], start=1)
    ]  # fmt: skip
    for message in history:
        publish(message)
        handled(message)  # one by one: the history is ordered
    usual = completed(
        contracts.KIND_INTERNAL, alice, 2_200, to_owner=user(), at="2026-08-20T09:00:00+00:00"
    )
    big = completed(contracts.KIND_PAYOUT, alice, 50_000, at="2026-08-21T09:00:00+00:00")
    for message in (usual, big):
        publish(message)
        handled(message)
    [flagged] = rpc.analytics.anomalies(alice)
    assert flagged["transfer_id"] == big["payload"]["transfer_id"]
    assert flagged["score"] > 3.5
    assert flagged["reason"].startswith("amount 25x your usual 20.00 EUR")
    assert flagged["amount"] == 50_000
    assert rpc.analytics.anomalies(user()) == []


def test_insights_on_spending_largest_outflow_and_recurring_payments(
    analytics, publish, handled, rpc
):
    alice = user()
    landlord = str(uuid.uuid4())
    messages = [
        completed(
            contracts.KIND_INTERNAL, alice, 60_000, to_owner=user(), reference=f"Rent {month}",
            to_account=landlord, at=f"{month}-01T09:00:00+00:00",
        )
        for month in ("2026-08", "2026-09", "2026-10")
    ] + [
        completed(
            contracts.KIND_INTERNAL, alice, 24_000, to_owner=user(), reference="Flight to Rome",
            at="2026-10-12T09:00:00+00:00",
        )
    ]  # fmt: skip
    for message in messages:
        publish(message)
    handled(*messages)
    items = rpc.analytics.insights(alice, "2026-10-15")
    by_kind = {item["kind"]: item for item in items}
    assert by_kind["spending_change"]["message"].startswith("Spending is up 40% on September")
    assert by_kind["largest_outflow"]["data"]["amount"] == "600.00"
    recurring = by_kind["recurring_payment"]
    assert recurring["data"]["months"] == ["2026-08", "2026-09", "2026-10"]
    assert recurring["data"]["counterparty"] == f"account:{landlord}"
    assert rpc.analytics.insights(user()) == []


def snapshot(sql):
    return {
        table: sql("analytics", f"SELECT * FROM {table} ORDER BY {order}")
        for table, order in PROJECTIONS.items()
    }


def test_rebuilding_by_replay_equals_the_live_projections(analytics, publish, handled, rpc, sql):
    alice, bob = user(), user()
    messages = [
        completed(
            contracts.KIND_INTERNAL, alice, amount, to_owner=bob, reference="Lunch",
            at=f"2026-07-{day:02d}T12:00:00+00:00",
        )
        for day, amount in enumerate([1_000, 1_100, 1_200, 900, 1_000, 1_050], start=1)
    ] + [
        completed(contracts.KIND_PAYOUT, alice, 80_000, at="2026-07-20T12:00:00+00:00"),
        completed(contracts.KIND_DEPOSIT, bob, 3_000, currency="GBP"),
        completed(contracts.KIND_INTERNAL, bob, 500, to_owner=bob, reference="Savings"),
        failed(contracts.KIND_INTERNAL, bob, 400, reason=contracts.REASON_INSUFFICIENT_FUNDS),
    ]  # fmt: skip
    for message in messages:
        publish(message)
        handled(message)
    live = snapshot(sql)
    assert any(row[1] == alice for row in live["anomalies"])
    result = rpc.analytics.rebuild()
    assert result["events"] >= len(messages)
    assert snapshot(sql) == live


def test_rebuild_equals_live_after_concurrent_deliveries(analytics, publish, handled, rpc, sql):
    """Ten workers handle one user's events at once; each user's events still
    take their log positions in commit order, so a replay sees the same history."""
    alice, bob = user(), user()
    amounts = [1_000 + (n * 37) % 300 for n in range(30)] + [90_000, 1_100, 75_000]
    messages = [
        completed(
            contracts.KIND_INTERNAL,
            alice if n % 3 else bob,
            amount,
            to_owner=bob if n % 3 else alice,
            reference="Groceries",
            at=f"2026-06-{n % 28 + 1:02d}T12:00:00+00:00",
        )
        for n, amount in enumerate(amounts)
    ]
    for message in messages:
        publish(message)
    handled(*messages, timeout=30)
    live = snapshot(sql)
    rpc.analytics.rebuild()
    assert snapshot(sql) == live


def scrape(port: int) -> str:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in the Prometheus text format."""
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    prefix = f"{name}{{{rendered}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def test_business_metrics_are_exported_for_prometheus_and_survive_a_rebuild(
    start_analytics, publish, handled, rpc
):
    port = free_port()
    start_analytics(metrics_port=port)
    # A currency only this test uses, so other tests' totals cannot interfere.
    before = scrape(port)
    assert sample(before, "analytics_metrics_up") == 1.0
    base_completed = (
        sample(before, "analytics_transfers_completed_total", kind="deposit", currency="CHF") or 0.0
    )
    alice = user()
    messages = [
        completed(contracts.KIND_DEPOSIT, alice, 12_345, currency="CHF"),
        completed(contracts.KIND_DEPOSIT, alice, 55, currency="CHF"),
        completed(contracts.KIND_PAYOUT, alice, 1_000, currency="CHF"),
        failed(contracts.KIND_DEPOSIT, alice, 999, currency="CHF", reason="card_declined"),
        failed(contracts.KIND_DEPOSIT, alice, 1, currency="CHF", reason="card_declined"),
        failed(contracts.KIND_PAYOUT, alice, 7, currency="CHF", reason="payout_failed"),
    ]
    for message in messages:
        publish(message)
    handled(*messages)
    after = scrape(port)
    labels = {"kind": "deposit", "currency": "CHF"}
    assert sample(after, "analytics_transfers_completed_total", **labels) == base_completed + 2
    assert sample(after, "analytics_transfer_volume_minor_total", **labels) >= 12_400
    assert sample(after, "analytics_transfers_failed_total", reason="card_declined", **labels) >= 2
    assert sample(
        after, "analytics_transfers_failed_total", kind="payout", currency="CHF",
        reason="payout_failed",
    ) >= 1  # fmt: skip
    assert "process_cpu_seconds_total" in after  # the process collector is there too
    # The counters come from the projections: a rebuild leaves them as they were.
    rpc.analytics.rebuild()
    assert _business_lines(scrape(port)) == _business_lines(after)


def _business_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("analytics_"))


def test_the_gateway_serves_the_analytics_endpoints_over_rpc(analytics, publish, handled, config):
    alice = user()
    month = datetime.now(UTC).strftime("%Y-%m")
    message = completed(contracts.KIND_DEPOSIT, alice, 4_250)
    publish(message)
    handled(message)
    app = create_app({"AMQP_URI": config["AMQP_URI"], "RPC_TIMEOUT": 10})

    @app.before_request
    def _caller():  # stands in for a verified token
        g.principal = Principal(user_id=request.headers["X-Test-User"], session_id="s", roles=())

    client = app.test_client()
    headers = {"X-Test-User": alice}
    response = client.get("/v1/analytics/summary", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {
        "month": month,
        "currencies": {
            "EUR": {
                "inflow": "42.50",
                "outflow": "0.00",
                "net": "42.50",
                "count": 1,
                "by_category": {
                    "top-up": {"inflow": "42.50", "outflow": "0.00", "net": "42.50", "count": 1}
                },
            }
        },
    }
    assert client.get("/v1/analytics/insights", headers=headers).get_json() == {"items": []}
    assert client.get("/v1/analytics/anomalies", headers=headers).get_json() == {"items": []}
    bad = client.get("/v1/analytics/summary?month=2026-00", headers=headers)
    assert bad.status_code == 422


def test_a_real_failed_transfer_reaches_analytics(
    container_factory, config, start_analytics, rpc, sql
):
    """transactions, accounts and risk produce the outcome; analytics counts it."""
    for service_cls in (AccountsService, TransactionsService, RiskService):
        container_factory(service_cls, config).start()
    start_analytics()
    alice, bob = user(), user()
    source = rpc.accounts.open_account(alice, "SEK")["account_id"]
    target = rpc.accounts.open_account(bob, "SEK")["account_id"]
    transfer_id = rpc.transactions.create_transfer(
        alice,
        f"k-{uuid.uuid4()}",
        {
            "kind": "internal",
            "amount": 5_000,
            "currency": "SEK",
            "from_account_id": source,
            "to_account_id": target,
            "reference": "rent",
        },
    )["transfer_id"]
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = sql(
            "analytics",
            "SELECT outcome FROM projected_transfers WHERE transfer_id = :t",
            t=transfer_id,
        )
        time.sleep(0.1)
    assert rows == [("failed",)]  # the account is empty: insufficient funds
    assert (
        sql(
            "analytics",
            "SELECT count FROM transfer_totals WHERE outcome = 'failed' AND kind = 'internal' "
            "AND currency = 'SEK' AND reason = :r",
            r=contracts.REASON_INSUFFICIENT_FUNDS,
        )[0][0]
        >= 1
    )

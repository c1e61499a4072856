"""analytics' use cases on an embedded SQLite database (no broker needed)."""

import uuid
from datetime import UTC, date, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

from services.analytics import consumers, domain, projections, views
from services.analytics.metrics import ProjectionCollector, metrics_port
from shared import contracts
from shared.config import ConfigError
from shared.events import envelope

SETTINGS = domain.AnomalySettings()
PROJECTION_TABLES = {
    "projected_transfers": "transfer_id",
    "monthly_totals": "user_id, month, currency",
    "monthly_categories": "user_id, month, currency, category",
    "flows": "transfer_id, user_id, direction",
    "anomalies": "transfer_id, user_id",
    "transfer_totals": "outcome, kind, currency, reason",
}


@pytest.fixture
def engine(migrated_sqlite):
    return migrated_sqlite("analytics")


def rows(engine, statement, **params):
    with engine.connect() as conn:
        return conn.execute(text(statement), params).all()


def snapshot(engine):
    return {
        table: rows(engine, f"SELECT * FROM {table} ORDER BY {order}")
        for table, order in PROJECTION_TABLES.items()
    }


def completed(
    kind, owner, amount, *, to_owner=None, reference=None, at="2026-11-10T12:00:00+00:00",
    currency="EUR", to_account=None, iban=None,
):  # fmt: skip
    transfer_id = str(uuid.uuid4())
    message = envelope(
        contracts.TRANSFER_COMPLETED,
        {
            "transfer_id": transfer_id,
            "kind": kind,
            "status": "completed",
            "reason": None,
            "owner_id": owner,
            "to_owner_id": to_owner,
            "amount": amount,
            "currency": currency,
            "transfer": {
                "transfer_id": transfer_id,
                "kind": kind,
                "owner_id": owner,
                "amount": amount,
                "currency": currency,
                "from_account_id": None if kind == contracts.KIND_DEPOSIT else str(uuid.uuid4()),
                "to_account_id": None
                if kind == contracts.KIND_PAYOUT
                else (to_account or str(uuid.uuid4())),
                "reference": reference,
                "source": None,
                "beneficiary": {"name": "B", "iban": iban} if iban else None,
                "deadline": None,
            },
        },
        correlation_id="test",
    )
    message["occurred_at"] = at
    return message


def failed(kind, owner, amount, reason, currency="EUR"):
    message = completed(kind, owner, amount, currency=currency)
    message["type"] = contracts.TRANSFER_FAILED
    message["payload"].update(status="failed", reason=reason)
    return message


def consume(uow, message, now=datetime(2026, 11, 30, tzinfo=UTC)):
    handle = (
        consumers.handle_transfer_completed
        if message["type"] == contracts.TRANSFER_COMPLETED
        else consumers.handle_transfer_failed
    )
    return handle(uow, message, now=now, settings=SETTINGS)


def test_a_month_per_currency_and_category(uow):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 200_000))
    consume(uow, completed(contracts.KIND_INTERNAL, alice, 85_000, to_owner=bob, reference="Rent"))
    consume(uow, completed(contracts.KIND_INTERNAL, alice, 4_550, to_owner=bob, reference="Lidl"))
    consume(uow, completed(contracts.KIND_PAYOUT, alice, 10_000, iban="DE89370400440532013000"))
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 1_000, currency="USD"))
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 999, at="2026-10-31T23:59:59+00:00"))

    result = views.summary(uow, alice, "2026-11")
    assert result == {
        "month": "2026-11",
        "currencies": {
            "EUR": {
                "inflow": 200_000,
                "outflow": 99_550,
                "net": 100_450,
                "count": 4,
                "by_category": {
                    "groceries": {"inflow": 0, "outflow": 4_550, "net": -4_550, "count": 1},
                    "payout": {"inflow": 0, "outflow": 10_000, "net": -10_000, "count": 1},
                    "rent": {"inflow": 0, "outflow": 85_000, "net": -85_000, "count": 1},
                    "top-up": {"inflow": 200_000, "outflow": 0, "net": 200_000, "count": 1},
                },
            },
            "USD": {
                "inflow": 1_000,
                "outflow": 0,
                "net": 1_000,
                "count": 1,
                "by_category": {
                    "top-up": {"inflow": 1_000, "outflow": 0, "net": 1_000, "count": 1}
                },
            },
        },
    }
    assert views.summary(uow, alice, "2026-10")["currencies"]["EUR"]["inflow"] == 999
    bob_month = views.summary(uow, bob, "2026-11")["currencies"]["EUR"]
    assert (bob_month["inflow"], bob_month["outflow"], bob_month["count"]) == (89_550, 0, 2)
    assert views.summary(uow, str(uuid.uuid4()), "2026-11") == {
        "month": "2026-11",
        "currencies": {},
    }


def test_a_duplicate_delivery_counts_once(uow, engine):
    alice = str(uuid.uuid4())
    message = completed(contracts.KIND_DEPOSIT, alice, 5_000)
    assert consume(uow, message) is True
    assert consume(uow, message) is False
    # The same outcome announced again under another event id: still once.
    again = {**message, "event_id": str(uuid.uuid4())}
    assert consume(uow, again) is True
    totals = views.summary(uow, alice, "2026-11")["currencies"]["EUR"]
    assert (totals["inflow"], totals["count"]) == (5_000, 1)
    assert rows(engine, "SELECT count(*) FROM analytics_events") == [(2,)]


def test_failures_are_counted_by_reason(uow, engine):
    alice = str(uuid.uuid4())
    consume(uow, failed(contracts.KIND_INTERNAL, alice, 500, contracts.REASON_INSUFFICIENT_FUNDS))
    consume(uow, failed(contracts.KIND_INTERNAL, alice, 700, contracts.REASON_INSUFFICIENT_FUNDS))
    consume(uow, failed(contracts.KIND_DEPOSIT, alice, 100, contracts.REASON_CARD_DECLINED))
    assert rows(
        engine, "SELECT outcome, kind, currency, reason, count, amount FROM transfer_totals"
        " ORDER BY kind",
    ) == [
        ("failed", "deposit", "EUR", "card_declined", 1, 100),
        ("failed", "internal", "EUR", "insufficient_funds", 2, 1_200),
    ]  # fmt: skip
    assert views.summary(uow, alice, "2026-11")["currencies"] == {}


def history(uow, user, amounts, month="2026-10", start_day=1):
    for day, amount in enumerate(amounts, start=start_day):
        at = f"{month}-{day:02d}T10:00:00+00:00"
        consume(
            uow,
            completed(
                contracts.KIND_INTERNAL, user, amount, to_owner=str(uuid.uuid4()),
                reference="Coffee", at=at,
            ),
        )  # fmt: skip


def test_an_unusual_outflow_is_flagged(uow):
    alice = str(uuid.uuid4())
    history(uow, alice, [1_800, 2_000, 2_100, 1_900, 2_200, 2_000])
    big = completed(contracts.KIND_PAYOUT, alice, 50_000, iban="DE89370400440532013000")
    consume(uow, big)
    [flagged] = views.anomalies(uow, alice)
    assert flagged["transfer_id"] == big["payload"]["transfer_id"]
    assert flagged["score"] == 240.0  # (50000 - 2000) / 200
    assert flagged["reason"].startswith("amount 25x your usual 20.00 EUR")
    assert (flagged["amount"], flagged["usual_amount"], flagged["currency"]) == (
        50_000,
        2_000,
        "EUR",
    )
    assert flagged["month"] == "2026-11"


def test_no_anomaly_without_enough_history_nor_for_money_coming_in(uow):
    alice = str(uuid.uuid4())
    history(uow, alice, [2_000] * 4)
    consume(uow, completed(contracts.KIND_PAYOUT, alice, 50_000))
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 900_000))
    assert views.anomalies(uow, alice) == []


def test_insights_for_the_current_month(uow):
    alice = str(uuid.uuid4())
    landlord = str(uuid.uuid4())
    for month in ("2026-09", "2026-10", "2026-11"):
        consume(
            uow,
            completed(
                contracts.KIND_INTERNAL, alice, 50_000, to_owner=str(uuid.uuid4()),
                reference=f"Rent {month}", to_account=landlord, at=f"{month}-01T09:00:00+00:00",
            ),
        )  # fmt: skip
    consume(uow, completed(contracts.KIND_PAYOUT, alice, 20_000, at="2026-11-15T09:00:00+00:00"))
    # Moving money to one's own savings is not spending.
    consume(
        uow,
        completed(
            contracts.KIND_INTERNAL, alice, 900_000, to_owner=alice, reference="Savings",
            at="2026-11-16T09:00:00+00:00",
        ),
    )  # fmt: skip
    items = views.insights(uow, alice, date(2026, 11, 20))
    by_kind = {item["kind"]: item for item in items}
    assert by_kind["spending_change"]["message"].startswith("Spending is up 40% on October")
    assert by_kind["largest_outflow"]["data"]["amount"] == "500.00"
    assert by_kind["recurring_payment"]["data"]["months"] == ["2026-09", "2026-10", "2026-11"]
    assert by_kind["recurring_payment"]["data"]["counterparty"] == f"account:{landlord}"
    # Nothing this month, nothing to say (December).
    assert views.insights(uow, alice, date(2026, 12, 1))[0]["kind"] == "recurring_payment"


def test_rebuild_equals_the_live_projections(uow, engine):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    history(uow, alice, [1_800, 2_000, 2_100, 1_900, 2_200, 2_000])
    consume(uow, completed(contracts.KIND_INTERNAL, alice, 60_000, to_owner=bob, reference="TV"))
    consume(uow, completed(contracts.KIND_DEPOSIT, bob, 1_000, currency="JPY"))
    consume(uow, completed(contracts.KIND_INTERNAL, bob, 300, to_owner=bob, reference="x"))
    consume(uow, failed(contracts.KIND_PAYOUT, bob, 100, contracts.REASON_PAYOUT_FAILED))
    message = completed(contracts.KIND_DEPOSIT, bob, 10)
    consume(uow, message)
    consume(uow, {**message, "event_id": str(uuid.uuid4())})  # announced twice
    live = snapshot(engine)
    assert live["anomalies"], "the crafted history should flag the TV"
    assert projections.rebuild(uow, SETTINGS) == {"events": 12, "transfers": 11}
    assert snapshot(engine) == live
    # From nothing, too.
    with engine.begin() as conn:
        for table in PROJECTION_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))
    projections.rebuild(uow, SETTINGS)
    assert snapshot(engine) == live


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": "10.00"},
        {"amount": True},
        {"currency": "eur"},
        {"currency": "XXX"},
        {"kind": "refund"},
        {"owner_id": None},
        {"transfer_id": "x" * 37},
    ],
)
def test_malformed_events_are_refused_and_leave_nothing(uow, engine, change):
    message = completed(contracts.KIND_DEPOSIT, str(uuid.uuid4()), 1_000)
    message["payload"].update(change)
    message["payload"]["transfer"].update(change)
    with pytest.raises(projections.MalformedEvent):
        consume(uow, message)
    assert rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    assert rows(engine, "SELECT count(*) FROM analytics_events") == [(0,)]


def test_the_collector_reads_business_metrics_from_the_tables(uow, engine):
    alice = str(uuid.uuid4())
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 1_250))
    consume(uow, completed(contracts.KIND_DEPOSIT, alice, 750))
    consume(uow, failed(contracts.KIND_DEPOSIT, alice, 100, contracts.REASON_CARD_DECLINED))
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(lambda: engine))
    text_format = generate_latest(registry).decode()
    assert 'analytics_transfers_completed_total{currency="EUR",kind="deposit"} 2.0' in text_format
    assert (
        'analytics_transfer_volume_minor_total{currency="EUR",kind="deposit"} 2000.0' in text_format
    )
    assert (
        'analytics_transfers_failed_total{currency="EUR",kind="deposit",reason="card_declined"} 1.0'
        in text_format
    )
    assert "analytics_metrics_up 1.0" in text_format


def test_the_collector_reports_a_broken_database_as_down():
    def broken():
        raise RuntimeError("no database")

    registry = CollectorRegistry()
    registry.register(ProjectionCollector(broken))
    assert "analytics_metrics_up 0.0" in generate_latest(registry).decode()


def test_metrics_port_from_config_or_environment(monkeypatch):
    monkeypatch.delenv("ANALYTICS_METRICS_PORT", raising=False)
    assert metrics_port({}) == 9102
    monkeypatch.setenv("ANALYTICS_METRICS_PORT", "0")
    assert metrics_port({}) == 0
    assert metrics_port({"ANALYTICS_METRICS_PORT": 9999}) == 9999
    monkeypatch.setenv("ANALYTICS_METRICS_PORT", "many")
    with pytest.raises(ConfigError, match="ANALYTICS_METRICS_PORT"):
        metrics_port({})
    with pytest.raises(ConfigError):
        metrics_port({"ANALYTICS_METRICS_PORT": 70000})

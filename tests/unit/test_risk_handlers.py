"""risk's use cases on an embedded SQLite database (no broker needed)."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.risk import domain, handlers
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.errors import NotFound
from shared.events import envelope
from shared.migrate import upgrade

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = domain.RiskLimits(daily_count=3)


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'risk.sqlite3'}"
    upgrade("risk", url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def uow(engine):
    return UnitOfWork(sessionmaker(engine, expire_on_commit=False), lambda: None)


def rows(engine, statement, **params):
    with engine.connect() as conn:
        return conn.execute(text(statement), params).all()


def transfer(account_id, amount=5_000, kind=contracts.KIND_INTERNAL, currency="EUR"):
    return {
        "transfer_id": str(uuid.uuid4()),
        "kind": kind,
        "owner_id": str(uuid.uuid4()),
        "amount": amount,
        "currency": currency,
        "from_account_id": account_id if kind != contracts.KIND_DEPOSIT else None,
        "to_account_id": str(uuid.uuid4()) if kind != contracts.KIND_PAYOUT else None,
        "reference": "rent",
        "source": None,
        "beneficiary": {"name": "B", "iban": "DE89370400440532013000"}
        if kind == contracts.KIND_PAYOUT
        else None,
        "deadline": (NOW + timedelta(minutes=1)).isoformat(),
    }


def requested(payload):
    return envelope(contracts.TRANSFER_REQUESTED, payload, correlation_id="test")


def assess(uow, payload, now=NOW, limits=LIMITS):
    return handlers.assess_transfer(uow, requested(payload), now=now, limits=limits)


def outbox(engine):
    return [json.loads(body) for (body,) in rows(engine, "SELECT body FROM outbox ORDER BY id")]


def test_a_small_transfer_is_approved_stored_and_announced(uow, engine):
    account = str(uuid.uuid4())
    payload = transfer(account)
    message = requested(payload)
    view = handlers.assess_transfer(uow, message, now=NOW, limits=LIMITS)
    assert view["decision"] == contracts.APPROVE
    assert view["score"] == 0 and view["reasons"] == []
    assert handlers.get_assessment(uow, payload["transfer_id"]) == view
    [event] = outbox(engine)
    assert event["type"] == contracts.TRANSFER_ASSESSED
    assert event["causation_id"] == message["event_id"]
    assert event["payload"] == {
        "transfer_id": payload["transfer_id"],
        "decision": contracts.APPROVE,
        "score": 0,
        "reasons": [],
        "transfer": payload,
    }


def test_an_over_limit_payout_is_rejected_with_reasons(uow, engine):
    payload = transfer(str(uuid.uuid4()), amount=2_000_000, kind=contracts.KIND_PAYOUT)
    view = assess(uow, payload)
    assert view["decision"] == contracts.REJECT
    assert view["score"] == 100
    assert domain.AMOUNT_OVER_LIMIT in view["reasons"]
    assert outbox(engine)[0]["payload"]["reasons"] == view["reasons"]


def test_a_duplicate_delivery_changes_nothing(uow, engine):
    message = requested(transfer(str(uuid.uuid4())))
    assert handlers.assess_transfer(uow, message, now=NOW, limits=LIMITS) is not None
    assert handlers.assess_transfer(uow, message, now=NOW, limits=LIMITS) is None
    assert rows(engine, "SELECT count(*) FROM assessments") == [(1,)]
    assert len(outbox(engine)) == 1


def test_a_transfer_is_decided_once_even_if_requested_again(uow, engine):
    account = str(uuid.uuid4())
    payload = transfer(account)
    for _ in range(LIMITS.daily_count):
        assess(uow, transfer(account))
    first = assess(uow, payload)
    assert first["decision"] == contracts.REJECT  # over the daily count
    # A new event for the same transfer, later, when the count would allow it.
    again = assess(uow, payload, now=NOW + timedelta(days=2))
    assert again == first
    assert rows(
        engine, "SELECT count(*) FROM assessments WHERE transfer_id = :t", t=payload["transfer_id"]
    ) == [(1,)]
    repeated = [e for e in outbox(engine) if e["payload"]["transfer_id"] == payload["transfer_id"]]
    assert [e["payload"]["decision"] for e in repeated] == [contracts.REJECT, contracts.REJECT]


def test_deposits_are_not_assessed(uow, engine):
    assert assess(uow, transfer(None, kind=contracts.KIND_DEPOSIT)) is None
    assert rows(engine, "SELECT count(*) FROM assessments") == [(0,)]
    assert rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    assert outbox(engine) == []


def test_velocity_counts_approved_transfers_of_the_account_within_the_window(uow):
    account, other = str(uuid.uuid4()), str(uuid.uuid4())
    # A day ago: outside the window.
    for _ in range(LIMITS.daily_count):
        assess(uow, transfer(account), now=NOW - timedelta(hours=24, seconds=1))
    # A rejected transfer does not count; another account's do not either.
    assert assess(uow, transfer(account, amount=9_999_999))["decision"] == contracts.REJECT
    assess(uow, transfer(other))
    decisions = [assess(uow, transfer(account))["decision"] for _ in range(LIMITS.daily_count)]
    assert decisions == [contracts.APPROVE] * LIMITS.daily_count
    nth = assess(uow, transfer(account))
    assert nth["decision"] == contracts.REJECT
    assert nth["reasons"] == [domain.DAILY_COUNT_EXCEEDED]


def test_velocity_sums_amounts_within_the_window(uow):
    account = str(uuid.uuid4())
    limits = domain.RiskLimits()  # EUR 10,000 per transfer, EUR 30,000 a day
    for _ in range(3):
        assert assess(uow, transfer(account, amount=900_000), limits=limits)["decision"] == (
            contracts.APPROVE
        )
    over = assess(uow, transfer(account, amount=300_001), limits=limits)
    assert over["decision"] == contracts.REJECT
    assert over["reasons"] == [domain.DAILY_AMOUNT_EXCEEDED]


def opened(account_id, occurred_at=None):
    message = envelope(
        contracts.ACCOUNT_OPENED,
        {"account_id": account_id, "owner_id": str(uuid.uuid4()), "currency": "EUR", "name": "x"},
        correlation_id="test",
    )
    if occurred_at is not None:
        message["occurred_at"] = occurred_at.isoformat()
    return message


def test_a_new_account_gets_the_lower_limit(uow, engine):
    young, old, unknown = (str(uuid.uuid4()) for _ in range(3))
    handlers.record_account_opened(uow, opened(young, NOW - timedelta(hours=1)), now=NOW)
    handlers.record_account_opened(uow, opened(old, NOW - timedelta(days=3)), now=NOW)
    amount = 150_000  # above a new account's EUR 1,000.00
    rejected = assess(uow, transfer(young, amount=amount))
    assert rejected["decision"] == contracts.REJECT
    assert rejected["reasons"] == [domain.NEW_ACCOUNT_LIMIT]
    assert assess(uow, transfer(old, amount=amount))["decision"] == contracts.APPROVE
    assert assess(uow, transfer(unknown, amount=amount))["decision"] == contracts.APPROVE


def test_account_opened_is_recorded_once(uow, engine):
    account = str(uuid.uuid4())
    first = opened(account, NOW - timedelta(hours=1))
    handlers.record_account_opened(uow, first, now=NOW)
    handlers.record_account_opened(uow, first, now=NOW)  # duplicate delivery
    handlers.record_account_opened(uow, opened(account, NOW), now=NOW)  # a second report
    [(opened_at,)] = rows(engine, "SELECT opened_at FROM account_ages")
    assert opened_at.startswith("2026-03-01 11:00")
    assert rows(engine, "SELECT count(*) FROM inbox") == [(2,)]


def test_an_account_opened_without_a_usable_time_is_dated_now(uow, engine):
    account = str(uuid.uuid4())
    message = opened(account)
    message["occurred_at"] = "yesterday"
    handlers.record_account_opened(uow, message, now=NOW)
    assert assess(uow, transfer(account, amount=150_000))["decision"] == contracts.REJECT


def test_queries_return_json_safe_views(uow):
    account = str(uuid.uuid4())
    first = assess(uow, transfer(account))
    second = assess(uow, transfer(account, amount=2_000_000))
    assess(uow, transfer(str(uuid.uuid4())))
    listed = handlers.list_assessments(uow, account_id=account)
    assert [a["transfer_id"] for a in listed] == [second["transfer_id"], first["transfer_id"]]
    assert len(handlers.list_assessments(uow)) == 3
    assert len(handlers.list_assessments(uow, limit=1)) == 1
    json.dumps(listed)
    assert listed[0]["assessed_at"] == NOW.isoformat()
    with pytest.raises(NotFound):
        handlers.get_assessment(uow, str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("field", "value"),
    [("from_account_id", None), ("amount", 0), ("amount", "5.00"), ("currency", None)],
)
def test_a_malformed_transfer_is_an_error_not_a_decision(uow, engine, field, value):
    payload = transfer(str(uuid.uuid4()))
    payload[field] = value
    with pytest.raises(handlers.MalformedTransfer):
        assess(uow, payload)
    assert rows(engine, "SELECT count(*) FROM inbox") == [(0,)]

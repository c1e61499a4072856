"""payments on the real PostgreSQL, broker and sandbox: idempotent operations and their events."""

import json
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.orm import sessionmaker

from services.payments import consumers, handlers
from services.payments.provider import HttpProvider, ProviderUnavailable
from services.payments.service import PaymentsService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.errors import Conflict, InvalidInput, NotFound, Unavailable
from shared.sqltypes import utcnow
from tests.integration.sandbox import (
    API_KEY,
    Crash,
    CrashAfterTheProviderAnswers,
    running_payments_sandbox,
)

GOOD_IBAN = "DE89370400440532013000"
FAILING_IBAN = "DE94370400440532010000"


@pytest.fixture(scope="module")
def sandbox():
    # No webhooks here: these tests decide when an operation is finished.
    with running_payments_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(sandbox):
    sandbox.reset()


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["payments"], pool_size=2)
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


@pytest.fixture
def provider(sandbox):
    client = HttpProvider(sandbox.url, API_KEY, (1.0, 2.0), backoff=0.05, backoff_max=0.2)
    yield client
    client.close()


def transfer() -> str:
    return str(uuid.uuid4())


def outbox_events(sql, transfer_id):
    rows = sql(
        "payments",
        "SELECT event_type, body FROM outbox "
        "WHERE (body::jsonb -> 'payload' ->> 'transfer_id') = :t ORDER BY id",
        t=transfer_id,
    )
    return [(event_type, json.loads(body)["payload"]) for event_type, body in rows]


def event_for(next_event, transfer_id, of_type, timeout=10.0):
    """The next event of that type about this transfer (the relay also publishes
    rows staged by the handler-level tests above, which had no relay running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = next_event(timeout=deadline - time.monotonic(), of_type=of_type)
        if event is not None and event.payload["payload"]["transfer_id"] == transfer_id:
            return event
    return None


def operation_row(sql, transfer_id, kind="charge"):
    return sql(
        "payments",
        "SELECT status, attempts, last_error, idempotency_key FROM provider_operations "
        "WHERE transfer_id = :t AND kind = :k",
        t=transfer_id,
        k=kind,
    )[0]


# --- the use cases, on the real database and sandbox ------------------------


def test_a_charge_is_recorded_with_its_event_and_never_sent_twice(uow, provider, sandbox, sql):
    t = transfer()
    first = handlers.charge_for_deposit(uow, provider, t, 1250, "EUR", "tok_ok")
    assert first["status"] == "succeeded" and first["provider_reference"].startswith("ch_")
    assert first["idempotency_key"] == f"charge-{t}"
    again = handlers.charge_for_deposit(uow, provider, t, 1250, "EUR", "tok_ok")
    assert again == first
    assert len(sandbox.requests_with_key(first["idempotency_key"])) == 1
    [(event_type, payload)] = outbox_events(sql, t)
    assert event_type == contracts.CARD_CHARGED
    assert payload == {
        "transfer_id": t,
        "provider": "sandbox",
        "provider_reference": first["provider_reference"],
        "amount": 1250,
        "currency": "EUR",
        "transfer": None,  # called directly, not by the saga
    }


def test_the_saga_transfer_travels_on_in_the_outcome_event(uow, provider, sql):
    t = transfer()
    saga_transfer = contracts.TransferDetails(
        transfer_id=t, kind="deposit", owner_id="owner-1", amount=900, currency="EUR"
    ).payload()
    handlers.charge_for_deposit(uow, provider, t, 900, "EUR", "tok_ok", transfer=saga_transfer)
    [(event_type, payload)] = outbox_events(sql, t)
    assert event_type == contracts.CARD_CHARGED
    assert payload["transfer"] == saga_transfer


def test_a_declined_card_fails_the_charge_with_card_declined(uow, provider, sql):
    t = transfer()
    result = handlers.charge_for_deposit(uow, provider, t, 1250, "EUR", "tok_declined")
    assert result["status"] == "failed" and result["reason"] == "card_declined"
    [(event_type, payload)] = outbox_events(sql, t)
    assert event_type == contracts.CARD_CHARGE_FAILED
    assert payload["reason"] == contracts.REASON_CARD_DECLINED
    assert payload["provider_reason"] == "card_declined"


def test_payouts_emit_succeeded_or_failed(uow, provider, sql):
    paid, closed, malformed = transfer(), transfer(), transfer()
    ada = {"name": "Ada Lovelace", "iban": "de89 3704 0044 0532 0130 00"}
    assert handlers.payout(uow, provider, paid, 500, "EUR", ada)["status"] == "succeeded"
    handlers.payout(uow, provider, closed, 500, "EUR", {"name": "Ada", "iban": FAILING_IBAN})
    handlers.payout(uow, provider, malformed, 500, "EUR", {"name": "Ada", "iban": "DE00123"})
    assert [e for e, _ in outbox_events(sql, paid)] == [contracts.PAYOUT_SUCCEEDED]
    [(event_type, payload)] = outbox_events(sql, closed)
    assert event_type == contracts.PAYOUT_FAILED
    assert payload["reason"] == contracts.REASON_PAYOUT_FAILED
    assert payload["provider_reason"] == "account_closed"
    [(_, payload)] = outbox_events(sql, malformed)
    assert payload["provider_reason"] == "invalid_iban"


def test_an_operation_left_in_flight_by_a_crash_is_resent_with_the_same_key(
    uow, provider, sandbox, sql
):
    t = transfer()
    with pytest.raises(Crash):
        handlers.charge_for_deposit(
            uow, CrashAfterTheProviderAnswers(provider), t, 700, "EUR", "tok_ok"
        )
    assert operation_row(sql, t)[0] == "in_flight"
    assert outbox_events(sql, t) == []
    result = handlers.charge_for_deposit(uow, provider, t, 700, "EUR", "tok_ok")
    assert result["status"] == "succeeded" and result["attempts"] == 2
    sent = sandbox.requests_with_key(f"charge-{t}")
    assert [r["replayed"] for r in sent] == [False, True]
    assert sandbox.stats()["created"]["charge"] == 1
    assert [e for e, _ in outbox_events(sql, t)] == [contracts.CARD_CHARGED]


def test_an_unavailable_provider_stages_no_event_and_a_later_call_finishes(
    uow, provider, sandbox, sql
):
    t = transfer()
    sandbox.fail_next(100, status=503)
    with pytest.raises(ProviderUnavailable):
        handlers.payout(uow, provider, t, 900, "EUR", {"name": "Ada", "iban": GOOD_IBAN})
    status, attempts, last_error, key = operation_row(sql, t, "payout")
    assert (status, attempts) == ("in_flight", 1)
    assert last_error.startswith("provider_error")
    assert outbox_events(sql, t) == []
    sandbox.clear_faults()
    result = handlers.payout(uow, provider, t, 900, "EUR", {"name": "Ada", "iban": GOOD_IBAN})
    assert result["status"] == "succeeded"
    assert {r["idempotency_key"] for r in sandbox.requests_with_key(key)} == {key}
    assert [e for e, _ in outbox_events(sql, t)] == [contracts.PAYOUT_SUCCEEDED]


def test_the_same_transfer_with_other_details_is_a_conflict(uow, provider, sandbox):
    t = transfer()
    handlers.charge_for_deposit(uow, provider, t, 1250, "EUR", "tok_ok")
    with pytest.raises(Conflict):
        handlers.charge_for_deposit(uow, provider, t, 1300, "EUR", "tok_ok")
    assert sandbox.stats()["created"]["charge"] == 1


def test_a_provider_event_is_recorded_once(uow, sql):
    event = {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "type": "charge.succeeded",
        "reference": "ch_unrelated",
        "idempotency_key": "charge-unknown",
        "amount": 1,
        "currency": "EUR",
    }
    assert handlers.record_provider_event(uow, "sandbox", event)["recorded"] is True
    assert handlers.record_provider_event(uow, "sandbox", event)["recorded"] is False
    assert sql(
        "payments", "SELECT count(*) FROM provider_events WHERE event_id = :e", e=event["event_id"]
    ) == [(1,)]


def test_a_provider_event_finishes_an_operation_left_in_flight(uow, provider, sandbox, sql):
    t = transfer()
    with pytest.raises(Crash):
        handlers.charge_for_deposit(
            uow, CrashAfterTheProviderAnswers(provider), t, 700, "EUR", "tok_declined"
        )
    charge = sandbox.post(
        "/v1/charges", {"amount": 700, "currency": "EUR", "token": "tok_declined"}, f"charge-{t}"
    ).json()
    event = {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "type": "charge.failed",
        "reference": charge["id"],
        "idempotency_key": f"charge-{t}",
        "amount": 700,
        "currency": "EUR",
        "failure_code": "card_declined",
    }
    recorded = handlers.record_provider_event(uow, "sandbox", event)
    assert recorded["operation"]["status"] == "failed"
    assert recorded["operation"]["provider_reference"] == charge["id"]
    [(event_type, payload)] = outbox_events(sql, t)
    assert event_type == contracts.CARD_CHARGE_FAILED
    assert payload["reason"] == contracts.REASON_CARD_DECLINED
    # The saga's retry now gets the recorded outcome; the provider is not asked.
    before = len(sandbox.requests_with_key(f"charge-{t}"))
    result = handlers.charge_for_deposit(uow, provider, t, 700, "EUR", "tok_declined")
    assert result["status"] == "failed"
    assert len(sandbox.requests_with_key(f"charge-{t}")) == before
    assert len(outbox_events(sql, t)) == 1


def test_an_event_that_does_not_match_its_operation_changes_nothing(uow, provider, sql):
    t = transfer()
    with pytest.raises(Crash):
        handlers.charge_for_deposit(
            uow, CrashAfterTheProviderAnswers(provider), t, 700, "EUR", "tok_ok"
        )
    event = {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "type": "charge.succeeded",
        "reference": "ch_x",
        "idempotency_key": f"charge-{t}",
        "amount": 70000,
        "currency": "EUR",
    }
    assert handlers.record_provider_event(uow, "sandbox", event)["operation"] is None
    assert operation_row(sql, t)[0] == "in_flight"
    assert outbox_events(sql, t) == []


# --- the service over RPC ------------------------------------------------------


@pytest.fixture
def payments(container_factory, config, sandbox, monkeypatch):
    monkeypatch.setenv("PAYMENTS_PROVIDER_URL", sandbox.url)
    monkeypatch.setenv("PAYMENTS_PROVIDER_API_KEY", API_KEY)
    monkeypatch.setenv("PAYMENTS_PROVIDER_READ_TIMEOUT", "2")
    monkeypatch.setenv("PAYMENTS_PROVIDER_MAX_ATTEMPTS", "2")
    container = container_factory(PaymentsService, config)
    container.start()
    return container


def test_charges_over_rpc_publish_their_outcome(payments, rpc, event_tap):
    next_event = event_tap("payments")
    t = transfer()
    result = rpc.payments.charge_for_deposit(t, 1250, "EUR", "tok_ok")
    assert result["status"] == "succeeded"
    event = event_for(next_event, t, contracts.CARD_CHARGED)
    assert event is not None
    assert event.payload["payload"]["transfer_id"] == t
    assert event.payload["payload"]["provider_reference"] == result["provider_reference"]
    assert event.headers["nameko.correlation_id"] == "it-test"
    assert rpc.payments.charge_for_deposit(t, 1250, "EUR", "tok_ok") == result
    assert rpc.payments.get_operation("charge", t) == result


def test_payouts_over_rpc_publish_their_outcome(payments, rpc, event_tap):
    next_event = event_tap("payments")
    t = transfer()
    result = rpc.payments.payout(t, 300, "EUR", {"name": "Ada", "iban": FAILING_IBAN})
    assert result["status"] == "failed" and result["reason"] == "account_closed"
    event = event_for(next_event, t, contracts.PAYOUT_FAILED)
    assert event.payload["payload"]["transfer_id"] == t
    assert event.payload["payload"]["reason"] == contracts.REASON_PAYOUT_FAILED


def test_an_unavailable_provider_is_a_503_category_over_rpc(payments, rpc, sandbox, sql):
    sandbox.fail_next(100, status=503)
    t = transfer()
    with pytest.raises(Unavailable) as unavailable:
        rpc.payments.charge_for_deposit(t, 1250, "EUR", "tok_ok")
    assert unavailable.value.code == "provider_unavailable"
    assert outbox_events(sql, t) == []


def test_bad_arguments_are_invalid_input(payments, rpc):
    with pytest.raises(InvalidInput):
        rpc.payments.charge_for_deposit("not-a-uuid", 1250, "EUR", "tok_ok")
    with pytest.raises(InvalidInput):
        rpc.payments.charge_for_deposit(transfer(), "12.50", "EUR", "tok_ok")
    with pytest.raises(InvalidInput):
        rpc.payments.payout(transfer(), 100, "EUR", {"name": "Ada"})
    with pytest.raises(InvalidInput):
        rpc.payments.record_provider_event("sandbox", {"type": "charge.succeeded"})
    with pytest.raises(NotFound):
        rpc.payments.get_operation("charge", transfer())


def test_a_provider_event_delivered_twice_over_rpc_is_recorded_once(payments, rpc, sql):
    event = {"event_id": f"evt_{uuid.uuid4().hex}", "type": "payout.succeeded", "extra": [1]}
    assert rpc.payments.record_provider_event("sandbox", event)["recorded"] is True
    assert rpc.payments.record_provider_event("sandbox", event)["recorded"] is False
    [(body,)] = sql(
        "payments", "SELECT body FROM provider_events WHERE event_id = :e", e=event["event_id"]
    )
    assert json.loads(body)["extra"] == [1]


def test_the_service_reports_healthy(payments, rpc):
    assert rpc.payments.health() == {"service": "payments", "status": "ok"}


def test_operations_an_outage_left_in_flight_are_redriven_once_the_provider_is_back(
    uow, provider, sandbox, sql
):
    """The saga step gave up (parked); the timer settles the deposit anyway."""
    t = transfer()
    deposit = contracts.TransferDetails(
        transfer_id=t,
        kind="deposit",
        owner_id="owner-1",
        amount=1500,
        currency="EUR",
        to_account_id="acc-1",
        source={"type": "card", "token": "tok_ok"},
    ).payload()
    sandbox.fail_next(100, status=503)
    with pytest.raises(ProviderUnavailable):
        consumers.handle_transfer_requested(uow, provider, {"event_id": "e-1", "payload": deposit})
    assert operation_row(sql, t)[0] == "in_flight"
    later = utcnow() + timedelta(minutes=10)
    sandbox.clear_faults()
    assert (
        consumers.redrive_in_flight(uow, provider, timedelta(minutes=5), utcnow()) == 0
    )  # too fresh
    assert consumers.redrive_in_flight(uow, provider, timedelta(minutes=5), later) == 1
    status, _, _, key = operation_row(sql, t)
    assert status == "succeeded"
    sent = sandbox.requests_with_key(key)
    # Failed sends (503) and one that charged: the provider charged exactly once.
    assert [r["status"] for r in sent if r["status"] < 500] == [201]
    [(event_type, payload)] = outbox_events(sql, t)
    assert event_type == contracts.CARD_CHARGED and payload["transfer"] == deposit

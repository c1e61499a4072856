"""payments against the provider's own records: the sandbox's list API, the
client's paging, and the comparison, with the real sandbox process and real
PostgreSQL (end-to-end runs through accounts: tests/e2e/test_reconciliation_http.py)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.payments import handlers, reconciliation
from services.payments.provider import HttpProvider
from shared.database import UnitOfWork, make_engine
from tests.integration.sandbox import API_KEY, running_payments_sandbox


@pytest.fixture(scope="module")
def sandbox():
    with running_payments_sandbox() as running:
        yield running


@pytest.fixture
def provider(sandbox):
    sandbox.reset()
    client = HttpProvider(sandbox.url, API_KEY, max_attempts=1)
    yield client
    client.close()


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["payments"])
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def _charge(sandbox, amount=1250, token="tok_ok", key=None):
    body = {"amount": amount, "currency": "EUR", "token": token}
    return sandbox.post("/v1/charges", body, key or str(uuid.uuid4())).json()


def test_the_sandbox_lists_what_it_made_in_pages_and_windows(sandbox, provider):
    made = [_charge(sandbox, 100 + n) for n in range(5)]
    made.append(_charge(sandbox, token="tok_declined"))
    payout = sandbox.post(
        "/v1/payouts",
        {
            "amount": 700,
            "currency": "EUR",
            "beneficiary": {"name": "L", "iban": "DE89370400440532013000"},
        },
        str(uuid.uuid4()),
    ).json()

    page = sandbox.session.get(f"{sandbox.url}/v1/charges", params={"limit": 2}).json()
    assert [o["id"] for o in page["data"]] == [m["id"] for m in made[:2]]
    assert page["has_more"] is True
    by_key = sandbox.session.get(
        f"{sandbox.url}/v1/charges", params={"idempotency_key": made[3]["idempotency_key"]}
    ).json()
    assert [o["id"] for o in by_key["data"]] == [made[3]["id"]]
    bad = sandbox.session.get(f"{sandbox.url}/v1/charges", params={"limit": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"

    now = datetime.now(UTC)
    listed = list(provider.list_operations("charge", now - timedelta(minutes=1), now))
    assert [o["id"] for o in listed] == [m["id"] for m in made]  # every page, in order
    assert [
        o["id"] for o in provider.list_operations("payout", now - timedelta(minutes=1), now)
    ] == [payout["id"]]
    later = now + timedelta(minutes=5)
    assert list(provider.list_operations("charge", later, later + timedelta(minutes=1))) == []
    assert provider.retrieve("charge", made[0]["id"])["amount"] == 100
    assert provider.retrieve("charge", "ch_nothing") is None


def _operation(amount=1250, status="succeeded", key=None, reference=None):
    return {
        "operation_id": str(uuid.uuid4()),
        "kind": "charge",
        "transfer_id": str(uuid.uuid4()),
        "idempotency_key": key or str(uuid.uuid4()),
        "amount": amount,
        "currency": "EUR",
        "status": status,
        "provider_reference": reference,
    }


def test_the_comparison_names_each_kind_of_disagreement():
    ours = [
        _operation(key="same"),
        _operation(key="amount"),
        _operation(key="status"),
        _operation(key="gone"),
        _operation(key="flight", status="in_flight"),
    ]
    theirs = [
        {
            "id": "ch_1",
            "idempotency_key": "same",
            "amount": 1250,
            "currency": "EUR",
            "status": "succeeded",
        },
        {
            "id": "ch_2",
            "idempotency_key": "amount",
            "amount": 1251,
            "currency": "EUR",
            "status": "succeeded",
        },
        {
            "id": "ch_3",
            "idempotency_key": "status",
            "amount": 1250,
            "currency": "EUR",
            "status": "failed",
        },
        {
            "id": "ch_4",
            "idempotency_key": "stray",
            "amount": 5,
            "currency": "EUR",
            "status": "succeeded",
        },
    ]

    found = {f["idempotency_key"]: f["kind"] for f in reconciliation.compare(ours, theirs)}
    unknown = reconciliation.unknown_objects(theirs, {"same", "amount", "status"})

    assert found == {
        "amount": "provider_amount_mismatch",
        "status": "provider_status_mismatch",
        "gone": "provider_record_missing",
    }
    assert [(u["kind"], u["idempotency_key"]) for u in unknown] == [
        ("provider_operation_unknown", "stray")
    ]


def test_reconcile_provider_against_real_charges(sandbox, provider, uow):
    since = datetime.now(UTC) - timedelta(seconds=1)
    charged = [
        handlers.charge_for_deposit(uow, provider, str(uuid.uuid4()), 300 + n, "EUR", "tok_ok")
        for n in range(3)
    ]
    declined = handlers.charge_for_deposit(
        uow, provider, str(uuid.uuid4()), 50, "EUR", "tok_declined"
    )
    assert declined["status"] == "failed"
    until = datetime.now(UTC) + timedelta(seconds=1)

    clean = reconciliation.reconcile_provider(uow, provider, since, until)
    assert clean["discrepancies"] == []
    assert clean["checked"]["operations"] >= 4

    stray_key = f"stray-{uuid.uuid4()}"
    _charge(sandbox, 999, key=stray_key)
    altered = charged[0]["transfer_id"]
    with uow.commit_on_exit() as session:
        session.execute(
            text("UPDATE provider_operations SET amount = amount + 1 WHERE transfer_id = :t"),
            {"t": altered},
        )
    found = reconciliation.reconcile_provider(
        uow, provider, since, datetime.now(UTC) + timedelta(seconds=1)
    )
    kinds = {(f["kind"], f["transfer_id"] or f["idempotency_key"]) for f in found["discrepancies"]}
    assert kinds == {
        ("provider_amount_mismatch", altered),
        ("provider_operation_unknown", stray_key),
    }

    sandbox.reset()  # the provider forgets everything: our records name nothing it has
    gone = reconciliation.reconcile_provider(
        uow, provider, since, datetime.now(UTC) + timedelta(seconds=1)
    )
    assert {f["kind"] for f in gone["discrepancies"]} == {"provider_record_missing"}
    assert len(gone["discrepancies"]) == 4


def test_operations_and_totals_for_the_reconciler(sandbox, provider, uow):
    transfer_id = str(uuid.uuid4())
    handlers.charge_for_deposit(uow, provider, transfer_id, 420, "EUR", "tok_ok")

    ops = reconciliation.operations_for_transfers(uow, [transfer_id, str(uuid.uuid4())])
    assert list(ops) == [transfer_id]
    assert (ops[transfer_id][0]["status"], ops[transfer_id][0]["amount"]) == ("succeeded", 420)

    totals = reconciliation.provider_totals(uow, provider, datetime.now(UTC).date(), "EUR")
    assert totals["provider"]["charges_succeeded"] == {"count": 1, "amount": 420}
    assert totals["ours"]["charges_succeeded"]["amount"] >= 420

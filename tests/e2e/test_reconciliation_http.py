"""Reconciliation end to end: a clean platform reports nothing; broken money is found.

Each test breaks something on purpose in a service's real database (or makes
a charge at the provider behind payments' back), runs the reconciler through
the admin API, checks what it reports, then puts things back and resolves
what it opened, so the next test starts from a clean state.
"""

import time
import uuid
from contextlib import closing

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url

from tests.e2e.helpers import FAILING_IBAN, Customer, make_admin


@pytest.fixture(scope="module")
def admin(api):
    return make_admin(api)[1]


def _sql(api, service, statement, params=()):
    url = make_url(api.env[f"{service.upper()}_DATABASE_URL"]).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    with closing(connection), connection, connection.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else cur.rowcount


def _run(api, admin, full=True):
    """Start a run and wait for its end (the API answers while it runs)."""
    response = api.post("/v1/admin/reconciliation/runs", token=admin, json={"full": full})
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["scope"] == ("full" if full else "incremental")
    assert response.headers["Location"] == f"/v1/admin/reconciliation/runs/{run['run_id']}"
    deadline = time.monotonic() + 60
    while run["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        run = api.get(response.headers["Location"], token=admin).json()
    assert run["status"] == "completed", run
    return run


def _open(api, admin, kind=None):
    params = {"status": "open", **({"kind": kind} if kind else {})}
    response = api.get("/v1/admin/reconciliation", token=admin, params=params)
    assert response.status_code == 200, response.text
    return response.json()["discrepancies"]


def _resolve_all(api, admin):
    for item in _open(api, admin):
        response = api.post(
            f"/v1/admin/reconciliation/discrepancies/{item['discrepancy_id']}/resolve",
            token=admin,
            json={"note": "put back by the test"},
        )
        assert response.status_code == 200, response.text


def _metrics(api) -> str:
    port = api.env["ACCOUNTS_METRICS_PORT"]
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def test_a_clean_platform_reconciles_with_nothing_to_report(api, admin):
    _resolve_all(api, admin)  # what earlier tests' faults may have left on purpose
    alice, bob = Customer(api), Customer(api)
    a, b = alice.funded("500.00"), bob.open()
    ids = [alice.transfer(a, b, f"0.{n % 90 + 10}") for n in range(200)]
    ids.append(alice.payout(a, "3.00"))
    ids.append(alice.payout(a, "2.00", iban=FAILING_IBAN))
    ids.append(alice.deposit(a, "4.00", token="tok_declined"))
    outcomes = {alice.settled(i)["status"] for i in ids}
    assert outcomes == {"completed", "failed"}

    run = _run(api, admin, full=True)

    assert run["discrepancies_found"] == 0, run["discrepancies"]
    assert run["checked"]["all_transfers"]["ended"] >= 203
    assert _open(api, admin) == []
    metrics = _metrics(api)
    assert 'reconciliation_discrepancies{kind="entry_missing"} 0.0' in metrics
    assert "reconciliation_last_success_timestamp_seconds" in metrics
    assert "reconciliation_last_run_failed 0.0" in metrics
    # An incremental run after the full one has nothing new and finds nothing.
    again = _run(api, admin, full=False)
    assert again["scope"] == "incremental" and again["discrepancies_found"] == 0


def test_the_daily_report_balances_and_matches_the_provider(api, admin):
    alice = Customer(api)
    alice.funded("40.00")
    day = alice.settled(alice.deposit(alice.open(), "1.00"))["created_at"][:10]

    response = api.get("/v1/admin/reconciliation/report", token=admin, params={"day": day})

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/csv")
    header, *rows = [line.split(",") for line in response.text.strip().splitlines()]
    eur = dict(zip(header, next(row for row in rows if row[1] == "EUR"), strict=True))
    assert eur["balanced"] == "True"
    assert int(eur["deposits_count"]) >= 2
    assert eur["deposits_unmatched"] == "0.00"  # every deposit of the day charged that day


def test_an_altered_posting_is_reported_and_cleared_once_put_back(api, admin):
    alice, bob = Customer(api), Customer(api)
    a, b = alice.funded("20.00"), bob.open()
    transfer_id = alice.transfer(a, b, "5.00")
    assert alice.settled(transfer_id)["status"] == "completed"
    _run(api, admin, full=False)
    posting_id, entry_id = _sql(
        api,
        "accounts",
        "SELECT p.id, p.entry_id FROM postings p JOIN journal_entries e ON e.id = p.entry_id "
        "WHERE e.transfer_id = %s AND p.amount > 0",
        (transfer_id,),
    )[0]
    _sql(api, "accounts", "UPDATE postings SET amount = amount + 1 WHERE id = %s", (posting_id,))
    try:
        run = _run(api, admin, full=True)
        found = {(d["kind"], d["entry_id"] or d["account_id"]) for d in run["discrepancies"]}
        assert ("entry_unbalanced", entry_id) in found
        assert ("balance_chain_broken", entry_id) in found
        assert 'reconciliation_discrepancies{kind="entry_unbalanced"} 1.0' in _metrics(api)
    finally:
        _sql(
            api, "accounts", "UPDATE postings SET amount = amount - 1 WHERE id = %s", (posting_id,)
        )
    run = _run(api, admin, full=True)
    assert run["discrepancies_found"] == 0
    assert _open(api, admin, "entry_unbalanced") == []


def test_a_hold_left_active_for_an_ended_payout_is_reported(api, admin):
    alice = Customer(api)
    a = alice.funded("20.00")
    transfer_id = alice.payout(a, "6.00")
    assert alice.settled(transfer_id)["status"] == "completed"
    hold_id = _sql(api, "accounts", "SELECT id FROM holds WHERE transfer_id = %s", (transfer_id,))
    hold_id = hold_id[0][0]
    # Left active (with held to match, so only the hold itself is wrong).
    _sql(api, "accounts", "UPDATE holds SET status = 'active' WHERE id = %s", (hold_id,))
    _sql(api, "accounts", "UPDATE balances SET held = held + 600 WHERE account_id = %s", (a,))
    try:
        run = _run(api, admin, full=False)
        kinds = {(d["kind"], d["transfer_id"]) for d in run["discrepancies"]}
        assert ("hold_for_ended_transfer", transfer_id) in kinds
    finally:
        _sql(api, "accounts", "UPDATE holds SET status = 'captured' WHERE id = %s", (hold_id,))
        _sql(api, "accounts", "UPDATE balances SET held = held - 600 WHERE account_id = %s", (a,))
    _run(api, admin, full=False)
    assert _open(api, admin, "hold_for_ended_transfer") == []  # cleared by itself


def test_a_journal_entry_removed_for_a_completed_transfer_is_reported(api, admin):
    alice, bob = Customer(api), Customer(api)
    a, b = alice.funded("20.00"), bob.open()
    transfer_id = alice.transfer(a, b, "7.00")
    assert alice.settled(transfer_id)["status"] == "completed"
    entry = _sql(
        api,
        "accounts",
        "SELECT id, transfer_id, kind, description, created_at FROM journal_entries "
        "WHERE transfer_id = %s",
        (transfer_id,),
    )[0]
    postings = _sql(
        api,
        "accounts",
        "SELECT id, entry_id, account_id, amount, currency, balance_after, created_at "
        "FROM postings WHERE entry_id = %s",
        (entry[0],),
    )
    _sql(api, "accounts", "DELETE FROM postings WHERE entry_id = %s", (entry[0],))
    _sql(api, "accounts", "DELETE FROM journal_entries WHERE id = %s", (entry[0],))
    try:
        run = _run(api, admin, full=True)
        kinds = {(d["kind"], d["transfer_id"]) for d in run["discrepancies"]}
        assert ("entry_missing", transfer_id) in kinds
        # The accounts' balances no longer equal their postings either.
        mismatched = {
            d["account_id"] for d in run["discrepancies"] if d["kind"] == "balance_mismatch"
        }
        assert {a, b} <= mismatched
    finally:
        _sql(
            api,
            "accounts",
            "INSERT INTO journal_entries (id, transfer_id, kind, description, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            entry,
        )
        for row in postings:
            _sql(
                api,
                "accounts",
                "INSERT INTO postings (id, entry_id, account_id, amount, currency, "
                "balance_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                row,
            )
    run = _run(api, admin, full=True)
    assert run["discrepancies_found"] == 0, run["discrepancies"]
    assert _open(api, admin, "entry_missing") == []  # a full pass clears what it no longer sees


def test_money_at_the_provider_and_in_the_ledger_must_match(api, admin):
    """A charge made at the provider that no deposit asked for, and a deposit
    whose charge the provider has no record of."""
    alice = Customer(api)
    a = alice.funded("10.00")
    _run(api, admin, full=False)
    sandbox = api.env["PAYMENTS_PROVIDER_URL"]
    stray_key = f"stray-{uuid.uuid4()}"
    charge = requests.post(
        f"{sandbox}/v1/charges",
        headers={"Authorization": "Bearer sk_e2e", "Idempotency-Key": stray_key},
        json={"amount": 1234, "currency": "EUR", "token": "tok_ok"},
        timeout=10,
    )
    assert charge.status_code == 201, charge.text
    deposit = alice.deposit(a, "2.50")
    assert alice.settled(deposit)["status"] == "completed"
    # Our record of the charge now names a key and reference the provider never saw.
    _sql(
        api,
        "payments",
        "UPDATE provider_operations SET idempotency_key = idempotency_key || '-x', "
        "provider_reference = 'ch_unknown' WHERE transfer_id = %s",
        (deposit,),
    )
    try:
        run = _run(api, admin, full=False)
        kinds = {d["kind"] for d in run["discrepancies"]}
        unknown = [d for d in run["discrepancies"] if d["kind"] == "provider_operation_unknown"]
        assert stray_key in {d["detail"]["idempotency_key"] for d in unknown}
        missing = [d for d in run["discrepancies"] if d["kind"] == "provider_record_missing"]
        assert deposit in {d["transfer_id"] for d in missing}, kinds
    finally:
        _sql(
            api,
            "payments",
            "UPDATE provider_operations SET idempotency_key = left(idempotency_key, "
            "length(idempotency_key) - 2) WHERE transfer_id = %s",
            (deposit,),
        )
    _resolve_all(api, admin)


def test_a_completed_deposit_without_its_payment_is_reported(api, admin):
    alice = Customer(api)
    a = alice.funded("10.00")
    deposit = alice.deposit(a, "3.00")
    assert alice.settled(deposit)["status"] == "completed"
    bump = "UPDATE provider_operations SET amount = amount + %s WHERE transfer_id = %s"
    _sql(api, "payments", bump, (5, deposit))
    try:
        run = _run(api, admin, full=False)
        kinds = {(d["kind"], d["transfer_id"]) for d in run["discrepancies"]}
        assert ("payment_mismatch", deposit) in kinds
    finally:
        _sql(api, "payments", bump, (-5, deposit))
    _resolve_all(api, admin)


def test_reconciliation_is_for_admins_only(api):
    customer = Customer(api)
    response = api.get("/v1/admin/reconciliation", token=customer.token)
    assert response.status_code == 403
    assert api.get("/v1/admin/reconciliation").status_code == 401


def test_bad_requests_get_a_clear_error_and_run_nothing(api, admin):
    runs_before = api.get("/v1/admin/reconciliation", token=admin).json()["runs"]

    bad_day = api.get("/v1/admin/reconciliation/report", token=admin, params={"day": "2026-13-45"})
    bad_full = api.post("/v1/admin/reconciliation/runs", token=admin, json={"full": "yes"})
    bad_kind = api.get("/v1/admin/reconciliation", token=admin, params={"kind": "nonsense"})
    no_note = api.post(
        f"/v1/admin/reconciliation/discrepancies/{uuid.uuid4()}/resolve", token=admin, json={}
    )
    unknown = api.post(
        f"/v1/admin/reconciliation/discrepancies/{uuid.uuid4()}/resolve",
        token=admin,
        json={"note": "x"},
    )

    for response in (bad_day, bad_full, bad_kind, no_note):
        assert response.status_code == 422, response.text
    assert unknown.status_code == 404 and unknown.json()["code"] == "discrepancy_not_found"
    assert api.get("/v1/admin/reconciliation", token=admin).json()["runs"] == runs_before

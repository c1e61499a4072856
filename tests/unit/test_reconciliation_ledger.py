"""The reconciler's ledger checks and its discrepancy lifecycle, on accounts' schema
(SQLite, the embedded default); cross-service runs are tested end to end."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from services.accounts import handlers, ledger, reconciliation
from services.accounts.reconciliation.findings import Finding
from services.accounts.reconciliation.runs import _Run, _store
from shared import contracts
from shared.errors import Conflict, NotFound
from shared.sqltypes import utcnow


@pytest.fixture
def engine(migrated_sqlite):
    return migrated_sqlite("accounts")


def _account(uow):
    return handlers.open_account(uow, str(uuid.uuid4()), "EUR", None, utcnow())["account_id"]


def _deposit(uow, account_id, amount):
    with uow.commit_on_exit() as session:
        return ledger.credit_deposit(
            session, str(uuid.uuid4()), account_id, amount, "EUR", utcnow()
        )


def _ledger_findings(uow, full=False):
    with uow.read() as connection:
        hi = connection.execute(text("SELECT max(id) FROM postings")).scalar()
        entries = reconciliation.entries_posted(connection, 0, hi)
        found = reconciliation.check_postings(connection, 0, hi, entries)
        found += reconciliation.check_balances(connection)
        if full:
            found += reconciliation.check_entries(connection)
            found += reconciliation.check_balance_sums(connection)
    return found


def test_a_sound_ledger_has_nothing_to_report(uow):
    a, b = _account(uow), _account(uow)
    _deposit(uow, a, 1000)
    _deposit(uow, b, 250)
    with uow.commit_on_exit() as session:
        outcome = ledger.post_transfer(session, str(uuid.uuid4()), a, b, 400, "EUR", None, utcnow())
    assert isinstance(outcome, ledger.Posted)

    assert _ledger_findings(uow, full=True) == []


def test_an_altered_posting_breaks_its_entry_and_its_account_chain(uow):
    a = _account(uow)
    entry_id = _deposit(uow, a, 1000)
    _deposit(uow, a, 500)
    with uow.commit_on_exit() as session:
        session.execute(
            text("UPDATE postings SET amount = amount + 7 WHERE entry_id = :e AND amount > 0"),
            {"e": entry_id},
        )

    found = {(f.kind, f.entry_id, f.account_id) for f in _ledger_findings(uow, full=True)}

    assert (reconciliation.ENTRY_UNBALANCED, entry_id, None) in found
    assert (reconciliation.BALANCE_CHAIN_BROKEN, entry_id, a) in found
    # The cached balance still equals the latest balance_after, not the postings' sum.
    assert (reconciliation.BALANCE_MISMATCH, None, a) in found


def test_held_must_equal_the_active_holds_and_each_currency_sums_to_zero(uow):
    a = _account(uow)
    _deposit(uow, a, 1000)
    with uow.commit_on_exit() as session:
        session.execute(text("UPDATE balances SET held = 30 WHERE account_id = :a"), {"a": a})
        session.execute(
            text("UPDATE balances SET balance = balance + 1 WHERE account_id = :a"), {"a": a}
        )

    kinds = {f.kind: f for f in _ledger_findings(uow)}

    assert kinds[reconciliation.HELD_MISMATCH].detail == {"held": 30, "active_holds": 0}
    assert kinds[reconciliation.CURRENCY_NOT_CONSERVED].detail == {
        "currency": "EUR",
        "sum_of_balances": 1,
    }


def _transfer(kind, status, amount=500, **accounts):
    return {
        "transfer_id": str(uuid.uuid4()),
        "kind": kind,
        "status": status,
        "amount": amount,
        "currency": "EUR",
        "from_account_id": accounts.get("source"),
        "to_account_id": accounts.get("target"),
    }


def test_a_completed_internal_transfer_needs_exactly_its_movement():
    t = _transfer(contracts.KIND_INTERNAL, "completed", source="A", target="B")
    right = [("e1", "internal", "A", -500, "EUR"), ("e1", "internal", "B", 500, "EUR")]
    wrong = [("e1", "internal", "A", -500, "EUR"), ("e1", "internal", "C", 500, "EUR")]

    assert reconciliation.judge_transfer(t, right, None) == []
    assert [f.kind for f in reconciliation.judge_transfer(t, [], None)] == ["entry_missing"]
    assert [f.kind for f in reconciliation.judge_transfer(t, wrong, None)] == ["entry_mismatch"]


def test_a_failed_transfer_may_move_nothing_or_a_reversed_pair():
    t = _transfer(contracts.KIND_INTERNAL, "failed", source="A", target="B")
    reversed_pair = [
        ("e1", "internal", "A", -500, "EUR"),
        ("e1", "internal", "B", 500, "EUR"),
        ("e2", "reversal", "B", -500, "EUR"),
        ("e2", "reversal", "A", 500, "EUR"),
    ]
    moved = reversed_pair[:2]

    assert reconciliation.judge_transfer(t, [], None) == []
    assert reconciliation.judge_transfer(t, reversed_pair, None) == []
    assert [f.kind for f in reconciliation.judge_transfer(t, moved, None)] == ["entry_unexpected"]


def test_money_through_the_provider_needs_one_succeeded_operation_of_its_amount():
    clearing = ledger.system_account_id(ledger.CARD_CLEARING, "EUR")
    t = _transfer(contracts.KIND_DEPOSIT, "completed", target="A")
    entry = [("e1", "deposit", clearing, -500, "EUR"), ("e1", "deposit", "A", 500, "EUR")]
    charge = {
        "operation_id": "o1",
        "kind": "charge",
        "status": "succeeded",
        "amount": 500,
        "currency": "EUR",
    }
    failed = _transfer(contracts.KIND_DEPOSIT, "failed", target="A")

    assert reconciliation.judge_transfer(t, entry, [charge]) == []
    assert [f.kind for f in reconciliation.judge_transfer(t, entry, [])] == ["payment_mismatch"]
    short = {**charge, "amount": 499}
    assert [f.kind for f in reconciliation.judge_transfer(t, entry, [short])] == [
        "payment_mismatch"
    ]
    # Charged, but the deposit failed: the customer paid and got nothing.
    assert [f.kind for f in reconciliation.judge_transfer(failed, [], [charge])] == [
        "payment_mismatch"
    ]


def _stored(uow, findings, full=False):
    run = _Run(str(uuid.uuid4()), full, utcnow(), findings=findings)
    with uow.commit_on_exit() as session:
        session.execute(
            text(
                "INSERT INTO reconciliation_runs (id, scope, trigger, status, started_at, checked,"
                " found, new) VALUES (:id, 'full', 'operator', 'running', :at, '{}', 0, 0)"
            ),
            {"id": run.run_id, "at": utcnow().isoformat(" ")},
        )
        new = _store(session.connection(), run, utcnow() + timedelta(seconds=1))
    return new, {d["kind"]: d for d in reconciliation.list_discrepancies(uow, status=None)}


def test_one_open_row_per_problem_cleared_when_a_run_no_longer_sees_it(uow):
    held = Finding(reconciliation.HELD_MISMATCH, account_id="A", detail={"held": 1})
    chain = Finding(reconciliation.BALANCE_CHAIN_BROKEN, account_id="A", ref="17")

    new, rows = _stored(uow, [held, chain])
    assert new == 2
    new, rows = _stored(uow, [held, chain])
    assert new == 0 and rows[held.kind]["status"] == "open"

    # Held is looked at afresh each run; a broken chain only by a full pass.
    new, rows = _stored(uow, [])
    assert rows[held.kind]["status"] == "cleared"
    assert rows[chain.kind]["status"] == "open"
    new, rows = _stored(uow, [], full=True)
    assert rows[chain.kind]["status"] == "cleared"


def test_an_operator_resolves_an_open_discrepancy_once(uow):
    _stored(uow, [Finding(reconciliation.ENTRY_MISSING, transfer_id="T")])
    (item,) = reconciliation.list_discrepancies(uow)

    done = reconciliation.resolve(uow, item["discrepancy_id"], "admin-1", "re-posted", utcnow())

    assert (done["status"], done["closed_by"], done["note"]) == ("resolved", "admin-1", "re-posted")
    with pytest.raises(Conflict):
        reconciliation.resolve(uow, item["discrepancy_id"], "admin-1", "again", utcnow())
    with pytest.raises(NotFound):
        reconciliation.resolve(uow, str(uuid.uuid4()), "admin-1", "x", utcnow())


def test_one_run_at_a_time_and_a_dead_run_is_marked_failed(uow):
    reconciler = reconciliation.Reconciler(uow, peers=None)
    now = utcnow()
    first = _Run(str(uuid.uuid4()), False, now)
    reconciler._start(first, "schedule")

    with pytest.raises(Conflict):
        reconciler._start(_Run(str(uuid.uuid4()), False, now), "operator")

    # Its process died: once the lease has run out, the next run takes over.
    later = _Run(str(uuid.uuid4()), False, now + reconciler.settings.lease + timedelta(seconds=1))
    reconciler._start(later, "schedule")
    runs = {run["run_id"]: run for run in reconciliation.list_runs(uow)}
    assert runs[first.run_id]["status"] == "failed"
    assert runs[first.run_id]["error"].startswith("abandoned")
    assert runs[later.run_id]["status"] == "running"

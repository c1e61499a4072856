"""Rebuilding transactions' read models by replay, on the embedded SQLite default.

(The same on PostgreSQL, with a step folded while the copies are built, is
in tests/integration/test_transactions_service.py.)
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.transactions import handlers
from services.transactions.directory import AccountDirectory
from shared import contracts
from shared.events import envelope

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine(migrated_sqlite):
    return migrated_sqlite("transactions")


def read_models(engine) -> tuple[list, list, list]:
    with engine.connect() as conn:
        return (
            conn.execute(text("SELECT * FROM transfer_view ORDER BY transfer_id")).all(),
            conn.execute(
                text("SELECT * FROM account_history ORDER BY account_id, transfer_id")
            ).all(),
            sorted(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).all()),
        )


def transfers(uow, count: int) -> list[str]:
    """Transfers between two customers' accounts, some completed, some failed, one pending."""
    directory = AccountDirectory()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    accounts = {owner: str(uuid.uuid4()) for owner in (alice, bob)}
    directory.learn(
        {"account_id": account, "owner_id": owner, "kind": "customer", "currency": "EUR",
         "status": "active"}
        for owner, account in accounts.items()
    )  # fmt: skip
    made = []
    for n in range(count):
        created = handlers.create_transfer(
            uow,
            directory,
            lambda: pytest.fail("the directory knows both accounts"),
            alice,
            f"key-{n}",
            {"kind": "internal", "amount": 100 + n, "currency": "EUR",
             "from_account_id": accounts[alice], "to_account_id": accounts[bob],
             "reference": f"rent {n}"},
            timedelta(minutes=1),
            NOW + timedelta(seconds=n),
        )  # fmt: skip
        made.append(created["transfer_id"])
        outcome = (contracts.TRANSFER_POSTED, contracts.TRANSFER_REFUSED, None)[n % 3]
        if outcome is None:
            continue  # still pending
        payload = {
            "transfer_id": created["transfer_id"],
            "reason": contracts.REASON_INSUFFICIENT_FUNDS,
            "prior_step": {"type": contracts.TRANSFER_APPROVED, "at": NOW.isoformat()},
        }
        with uow.commit_on_exit() as session:
            handlers.fold_step(session, envelope(outcome, payload, correlation_id="t"), NOW)
    return made


def test_a_rebuild_replays_every_event_into_read_models_equal_to_the_live_ones(uow, engine):
    made = transfers(uow, 12)
    live = read_models(engine)
    assert len(live[0]) == 12 and len(live[1]) == 24
    replayed = handlers.rebuild_projections(uow)
    # Per transfer: requested; then approved, posted|refused and the end (two in three).
    assert replayed == 12 + 8 * 3
    assert read_models(engine) == live
    statuses = {row.transfer_id: row.status for row in live[0]}
    assert [statuses[t] for t in made[:3]] == ["completed", "failed", "pending"]


def test_a_rebuild_of_an_empty_store_leaves_empty_read_models(uow, engine):
    assert handlers.rebuild_projections(uow) == 0
    views, histories, _ = read_models(engine)
    assert views == [] and histories == []

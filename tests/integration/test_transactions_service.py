"""transactions on the real broker and PostgreSQL: idempotent creation, the event
store, saga folding, deadlines, and projections rebuilt by replay."""

import json
import uuid
from datetime import timedelta

import eventlet
import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.accounts.service import AccountsService
from services.transactions import consumers, event_store, handlers, rebuild
from services.transactions.domain import Event, Recorded, Transfer
from services.transactions.models import TransferView
from services.transactions.service import TransactionsService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import envelope
from shared.rpc import cluster_rpc
from shared.sqltypes import utcnow


@pytest.fixture
def services(container_factory, config):
    for service_cls in (AccountsService, TransactionsService):
        container_factory(service_cls, config).start()


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["transactions"], pool_size=5)
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def two_accounts(rpc):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    return (
        alice,
        rpc.accounts.open_account(alice, "EUR")["account_id"],
        bob,
        rpc.accounts.open_account(bob, "EUR")["account_id"],
    )


def internal(from_id, to_id, amount=500):
    return {
        "kind": "internal",
        "amount": amount,
        "currency": "EUR",
        "from_account_id": from_id,
        "to_account_id": to_id,
        "reference": "rent",
    }


def test_creating_a_transfer_records_it_and_asks_the_saga_to_start(services, rpc, event_tap):
    requested = event_tap("transactions", contracts.TRANSFER_REQUESTED)
    alice, a_acc, bob, b_acc = two_accounts(rpc)
    created = rpc.transactions.create_transfer(alice, "key-1", internal(a_acc, b_acc))
    assert created["status"] == "pending"
    message = requested(of_type=contracts.TRANSFER_REQUESTED).payload
    assert message["payload"]["transfer_id"] == created["transfer_id"]
    assert message["payload"]["amount"] == 500 and message["payload"]["kind"] == "internal"
    for caller in (alice, bob):  # either side's owner sees it
        view = rpc.transactions.get_transfer(caller, created["transfer_id"])
        assert view["status"] == "pending" and view["steps"] == []
    with pytest.raises(NotFound):
        rpc.transactions.get_transfer(str(uuid.uuid4()), created["transfer_id"])


def test_the_same_key_replays_and_a_different_body_conflicts(services, rpc):
    alice, a_acc, _, b_acc = two_accounts(rpc)
    first = rpc.transactions.create_transfer(alice, "same-key", internal(a_acc, b_acc))
    again = rpc.transactions.create_transfer(alice, "same-key", internal(a_acc, b_acc))
    assert again == first
    with pytest.raises(Conflict) as caught:
        rpc.transactions.create_transfer(alice, "same-key", internal(a_acc, b_acc, 501))
    assert caught.value.code == "idempotency_key_reused"
    # Keys are per customer: another customer's identical key is independent.
    bob, bob_acc, _, _ = two_accounts(rpc)
    other = rpc.transactions.create_transfer(bob, "same-key", internal(bob_acc, a_acc))
    assert other["transfer_id"] != first["transfer_id"]


def test_concurrent_requests_with_one_key_create_one_transfer(services, config, rpc, sql):
    alice, a_acc, _, b_acc = two_accounts(rpc)

    def create(_):
        with cluster_rpc(config, timeout=20) as client:
            return client.transactions.create_transfer(alice, "race", internal(a_acc, b_acc))

    results = list(eventlet.GreenPool(6).imap(create, range(6)))
    assert len({r["transfer_id"] for r in results}) == 1
    assert sql(
        "transactions", "SELECT count(*) FROM transfer_view WHERE owner_id = :o", o=alice
    ) == [(1,)]


def test_bad_transfers_are_refused_before_anything_is_recorded(services, rpc, sql):
    alice, a_acc, bob, b_acc = two_accounts(rpc)
    usd = rpc.accounts.open_account(alice, "USD")["account_id"]
    with pytest.raises(InvalidInput) as mismatch:
        rpc.transactions.create_transfer(alice, "k1", internal(a_acc, usd))
    assert mismatch.value.code == "currency_mismatch"
    with pytest.raises(NotFound):
        rpc.transactions.create_transfer(bob, "k2", internal(a_acc, b_acc))
    with pytest.raises(InvalidInput):
        rpc.transactions.create_transfer(alice, "k3", internal(a_acc, b_acc, amount=0))
    with pytest.raises(InvalidInput):
        rpc.transactions.create_transfer(alice, "k4", {**internal(a_acc, b_acc), "amount": 1.5})
    assert sql(
        "transactions", "SELECT count(*) FROM transfer_requests WHERE owner_id = :o", o=alice
    ) == [(0,)]


# What each step's contract requires besides the transfer (shared.contracts).
STEP_FIELDS = {
    contracts.TRANSFER_REJECTED: {"score": 90, "reasons": ["amount_over_limit"]},
    contracts.TRANSFER_REVIEW_REQUESTED: {
        "review_id": "r-1",
        "owner_id": "o",
        "score": 50,
        "reasons": [],
        "expires_at": "2026-12-03T00:00:00+00:00",
    },
    contracts.FUNDS_RESERVED: {
        "hold_id": "h-1",
        "account_id": "a",
        "amount": 500,
        "currency": "EUR",
    },
    contracts.TRANSFER_POSTED: {"entry_id": "e-1"},
    contracts.TRANSFER_REFUSED: {"reason": "insufficient_funds"},
}
APPROVED = {"type": contracts.TRANSFER_APPROVED, "at": "2026-12-02T00:00:00+00:00"}


def saga_event(event_type, transfer_id, **payload):
    """A participant's event about the transfer, as its contract has it."""
    transfer = contracts.TransferDetails(
        transfer_id=transfer_id, kind="internal", owner_id="o", amount=500, currency="EUR"
    ).payload()
    body = {"transfer_id": transfer_id, "transfer": transfer, **STEP_FIELDS[event_type], **payload}
    return envelope(event_type, body, correlation_id="t")


def fold(uow, message):
    consumers.handle_saga_step(uow, message, utcnow())


def test_saga_steps_fold_once_and_the_end_is_announced(services, rpc, uow, event_tap):
    ended = event_tap("transactions", contracts.TRANSFER_COMPLETED)
    alice, a_acc, _, b_acc = two_accounts(rpc)
    transfer_id = rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc))[
        "transfer_id"
    ]
    posted = saga_event(contracts.TRANSFER_POSTED, transfer_id, prior_step=APPROVED)
    for message in (posted, posted):
        fold(uow, message)
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert view["status"] == "completed"
    assert [s["type"] for s in view["steps"]] == [
        contracts.TRANSFER_APPROVED,
        contracts.TRANSFER_POSTED,
    ]
    completed = ended(of_type=contracts.TRANSFER_COMPLETED).payload["payload"]
    assert completed["transfer_id"] == transfer_id and completed["amount"] == 500


def test_the_end_goes_to_the_route_the_transfer_was_started_with_and_no_other(
    services, rpc, uow, event_tap
):
    route, elsewhere = (f"{contracts.OUTCOME_ROUTE_PREFIX}{uuid.uuid4()}" for _ in range(2))
    mine = event_tap("transactions", routing_key=route)
    other = event_tap("transactions", routing_key=elsewhere)
    consumers_see = event_tap("transactions", contracts.TRANSFER_COMPLETED)
    alice, a_acc, _, b_acc = two_accounts(rpc)
    started = rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc), route)
    unrouted = rpc.transactions.create_transfer(alice, "k2", internal(a_acc, b_acc, 100))
    for transfer_id in (started["transfer_id"], unrouted["transfer_id"]):
        fold(uow, saga_event(contracts.TRANSFER_POSTED, transfer_id, prior_step=APPROVED))
    # The route gets its transfer's outcome, once; the consumers get both.
    outcome = mine(of_type=contracts.TRANSFER_COMPLETED)
    assert outcome.payload["payload"]["transfer_id"] == started["transfer_id"]
    assert outcome.payload["payload"]["status"] == "completed"
    assert "BCC" not in outcome.headers  # the broker keeps the route list to itself
    assert mine(timeout=1.0) is None
    assert other(timeout=0.5) is None
    seen = {
        consumers_see(of_type=contracts.TRANSFER_COMPLETED).payload["payload"]["transfer_id"]
        for _ in range(2)
    }
    assert seen == {started["transfer_id"], unrouted["transfer_id"]}


@pytest.mark.parametrize(
    "route",
    ["transfer_approved.internal", "gateway.outcomes.#", f"gateway.outcomes.{uuid.uuid4()}\n", ""],
)
def test_only_a_gateway_outcome_route_is_taken(services, rpc, sql, route):
    alice, a_acc, _, b_acc = two_accounts(rpc)
    with pytest.raises(InvalidInput) as refused:
        rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc), route)
    assert "notify" in str(refused.value)
    assert sql(
        "transactions", "SELECT count(*) FROM transfer_requests WHERE owner_id = :o", o=alice
    ) == [(0,)]


def test_a_stale_writer_gets_a_concurrency_error(services, rpc, uow):
    alice, a_acc, _, b_acc = two_accounts(rpc)
    transfer_id = rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc))[
        "transfer_id"
    ]
    step = Event(Recorded.STEP_RECORDED, {"step": "x", "at": utcnow().isoformat()})
    with uow.commit_on_exit() as session:
        event_store.append(session, transfer_id, 1, [step], None, utcnow())
    with pytest.raises(event_store.ConcurrencyError), uow.commit_on_exit() as session:
        event_store.append(session, transfer_id, 1, [step], None, utcnow())


def test_overdue_transfers_fail_as_timed_out_and_say_so(services, rpc, uow, event_tap):
    failed = event_tap("transactions", contracts.TRANSFER_FAILED)
    alice, a_acc, _, b_acc = two_accounts(rpc)
    transfer_id = rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc))[
        "transfer_id"
    ]

    def may_expire(tid):
        return rpc.accounts.expire_transfer(tid)["expired"]

    assert handlers.expire_overdue(uow, may_expire, utcnow()) == 0  # not due yet
    assert handlers.expire_overdue(uow, may_expire, utcnow() + timedelta(minutes=5)) >= 1
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert (view["status"], view["failure_reason"]) == ("failed", "timed_out")
    messages = []
    while (message := failed(timeout=2, of_type=contracts.TRANSFER_FAILED)) is not None:
        messages.append(message.payload["payload"])
    assert any(m["transfer_id"] == transfer_id and m["reason"] == "timed_out" for m in messages)


def test_a_review_folded_while_accounts_expires_it_does_not_leave_it_pending(services, rpc, uow):
    alice, a_acc, _, b_acc = two_accounts(rpc)
    transfer_id = rpc.transactions.create_transfer(alice, "k", internal(a_acc, b_acc))[
        "transfer_id"
    ]

    def may_expire(tid):
        # While accounts closes it, risk's review arrives and moves the deadline.
        expires = (utcnow() + timedelta(days=1)).isoformat()
        fold(uow, saga_event(contracts.TRANSFER_REVIEW_REQUESTED, tid, expires_at=expires))
        return rpc.accounts.expire_transfer(tid)["expired"]

    assert handlers.expire_overdue(uow, may_expire, utcnow() + timedelta(minutes=5)) == 1
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert (view["status"], view["failure_reason"]) == ("failed", "timed_out")


def test_a_step_folded_while_the_projections_are_rebuilt_is_in_the_rebuilt_ones(
    services, rpc, uow, sql, monkeypatch
):
    """The copies are built without holding the saga back; what it folds
    meanwhile is caught up before they replace the live tables."""
    alice, a_acc, _, b_acc = two_accounts(rpc)
    transfer_id = rpc.transactions.create_transfer(alice, "during", internal(a_acc, b_acc))[
        "transfer_id"
    ]
    hold_back = rebuild._hold_back_new_events

    def fold_first(session):
        # Built already, not swapped yet: the saga moves this transfer on.
        fold(uow, saga_event(contracts.TRANSFER_POSTED, transfer_id, prior_step=APPROVED))
        hold_back(session)

    monkeypatch.setattr(rebuild, "_hold_back_new_events", fold_first)
    handlers.rebuild_projections(uow)
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert view["status"] == "completed"
    assert [step["type"] for step in view["steps"]] == [
        contracts.TRANSFER_APPROVED,
        contracts.TRANSFER_POSTED,
    ]
    [(listed,)] = sql(
        "transactions",
        "SELECT count(*) FROM account_history WHERE transfer_id = :t",
        t=transfer_id,
    )
    assert listed == 2
    indexes = {
        name
        for (name,) in sql(
            "transactions", "SELECT indexname FROM pg_indexes WHERE tablename = 'transfer_view'"
        )
    }
    assert indexes == {index.name for index in TransferView.__table__.indexes} | {
        "pk_transfer_view"
    }


def test_rebuilding_the_projections_by_replay_equals_the_live_ones(services, rpc, uow, sql):
    alice, a_acc, _, b_acc = two_accounts(rpc)
    for n in range(3):
        transfer_id = rpc.transactions.create_transfer(alice, f"r{n}", internal(a_acc, b_acc))[
            "transfer_id"
        ]
        for step in (
            contracts.TRANSFER_REVIEW_REQUESTED,
            contracts.FUNDS_RESERVED,
            contracts.TRANSFER_POSTED,
        )[: n + 1]:
            fold(uow, saga_event(step, transfer_id, prior_step=APPROVED))

    def snapshot():
        return (
            sql("transactions", "SELECT * FROM transfer_view ORDER BY transfer_id"),
            sql("transactions", "SELECT * FROM account_history ORDER BY account_id, transfer_id"),
        )

    live = snapshot()
    result = rpc.transactions.rebuild_projections()
    assert result["events_replayed"] >= 9
    assert snapshot() == live
    # Every stream's snapshot is at its head: loading it gives the same state
    # as a full replay of its events.
    with uow.commit_on_exit() as session:
        streams = session.execute(text("SELECT stream_id FROM snapshots")).scalars().all()
        assert len(streams) >= 3
        for stream_id in streams:
            rows = session.execute(
                text("SELECT event_type, data FROM events WHERE stream_id = :s ORDER BY version"),
                {"s": stream_id},
            ).all()
            full = Transfer.replay([Event(t, json.loads(d)) for t, d in rows])
            assert event_store.load(session, stream_id) == full

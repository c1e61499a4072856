"""Saga steps delivered out of order (and more than once) still settle correctly."""

import uuid

import eventlet
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.accounts import consumers, ledger
from services.accounts import handlers as accounts_handlers
from services.accounts.models import Balance, Hold, JournalEntry
from services.accounts.service import AccountsService
from services.transactions import consumers as transactions_consumers
from services.transactions.service import TransactionsService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.events import envelope
from shared.sqltypes import utcnow


def _uow(url, pool_size=2):
    engine = make_engine(url, pool_size=pool_size)
    return engine, UnitOfWork(sessionmaker(engine, expire_on_commit=False))


@pytest.fixture
def uows(integration_env):
    made = {
        name: _uow(integration_env.database_urls[name]) for name in ("accounts", "transactions")
    }
    yield {name: uow for name, (_, uow) in made.items()}
    for engine, _ in made.values():
        engine.dispose()


@pytest.fixture
def services(container_factory, config):
    for service_cls in (AccountsService, TransactionsService):
        container_factory(service_cls, config).start()


def _details(transfer: dict) -> dict:
    return contracts.TransferDetails(**transfer).payload()


def test_steps_arriving_late_and_twice_are_folded_once_in_order(services, rpc, uows, event_tap):
    completed = event_tap("transactions", contracts.TRANSFER_COMPLETED)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a = rpc.accounts.open_account(alice, "EUR")["account_id"]
    b = rpc.accounts.open_account(bob, "EUR")["account_id"]
    request = {
        "kind": "internal",
        "amount": 100,
        "currency": "EUR",
        "from_account_id": a,
        "to_account_id": b,
    }
    transfer_id = rpc.transactions.create_transfer(alice, "k", request)["transfer_id"]
    transfer = _details({"transfer_id": transfer_id, "owner_id": alice, **request})
    approved = {"type": contracts.TRANSFER_APPROVED, "at": "2026-12-01T10:00:00+00:00"}
    posted = envelope(
        contracts.TRANSFER_POSTED,
        {
            "transfer_id": transfer_id,
            "entry_id": "e-1",
            "transfer": transfer,
            "prior_step": approved,
        },
        correlation_id="o",
    )
    late = envelope(
        contracts.FUNDS_RELEASED,
        {"transfer_id": transfer_id, "hold_id": "h", "account_id": a, "transfer": transfer},
        correlation_id="o",
    )
    for message in (posted, posted, late):  # the posting twice, then a stray late step
        transactions_consumers.handle_saga_step(uows["transactions"], message, utcnow())
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert view["status"] == "completed"
    assert [s["type"] for s in view["steps"]] == [
        contracts.TRANSFER_APPROVED,
        contracts.TRANSFER_POSTED,
        contracts.FUNDS_RELEASED,
    ]
    assert completed(of_type=contracts.TRANSFER_COMPLETED) is not None
    assert completed(timeout=1.0, of_type=contracts.TRANSFER_COMPLETED) is None  # only once


def _funded(uow, amount=1000):
    account = accounts_handlers.open_account(uow, str(uuid.uuid4()), "EUR", None, utcnow())
    with uow.commit_on_exit() as session:
        ledger.credit_deposit(
            session, str(uuid.uuid4()), account["account_id"], amount, "EUR", utcnow()
        )
    return account


def _transfer(uow, kind, amount=400):
    sender = _funded(uow)
    receiver = (
        accounts_handlers.open_account(uow, str(uuid.uuid4()), "EUR", None, utcnow())
        if kind == contracts.KIND_INTERNAL
        else None
    )
    return sender, _details(
        {
            "transfer_id": str(uuid.uuid4()),
            "kind": kind,
            "owner_id": sender["owner_id"],
            "amount": amount,
            "currency": "EUR",
            "from_account_id": sender["account_id"],
            "to_account_id": receiver["account_id"] if receiver else None,
            "beneficiary": {"name": "Ada", "iban": "DE89370400440532013000"}
            if not receiver
            else None,
        }
    )


def _approve(uow, transfer):
    consumers.handle_transfer_approved(
        uow,
        envelope(
            contracts.TRANSFER_APPROVED,
            {
                "transfer_id": transfer["transfer_id"],
                "score": 0,
                "reasons": [],
                "transfer": transfer,
            },
            correlation_id="o",
        ),
        utcnow(),
    )


def _holds(uow, transfer_id):
    with uow.commit_on_exit() as session:
        return session.scalars(select(Hold).where(Hold.transfer_id == transfer_id)).all()


def _entries(uow, transfer_id):
    with uow.commit_on_exit() as session:
        return session.scalars(
            select(JournalEntry.id).where(JournalEntry.transfer_id == transfer_id)
        ).all()


def test_an_approval_arriving_after_the_deadline_moves_nothing(uows):
    uow = uows["accounts"]
    sender, transfer = _transfer(uow, contracts.KIND_INTERNAL)
    # The deadline failed the transfer before risk's approval was delivered.
    assert accounts_handlers.expire_transfer(uow, transfer["transfer_id"], utcnow()) == {
        "expired": True
    }
    _approve(uow, transfer)
    with uow.commit_on_exit() as session:
        balance = session.get(Balance, sender["account_id"])
    assert _entries(uow, transfer["transfer_id"]) == []
    assert (balance.balance, balance.held) == (1000, 0)


def test_a_posted_transfer_never_expires(uows):
    uow = uows["accounts"]
    _, transfer = _transfer(uow, contracts.KIND_INTERNAL)
    _approve(uow, transfer)
    assert len(_entries(uow, transfer["transfer_id"])) == 1
    assert accounts_handlers.expire_transfer(uow, transfer["transfer_id"], utcnow()) == {
        "expired": False
    }


def test_a_payout_with_reserved_funds_never_expires_and_an_expired_one_is_never_reserved(uows):
    uow = uows["accounts"]
    _, reserved = _transfer(uow, contracts.KIND_PAYOUT)
    _approve(uow, reserved)
    assert accounts_handlers.expire_transfer(uow, reserved["transfer_id"], utcnow()) == {
        "expired": False
    }  # the money is held: the payout must run its course

    _, idle = _transfer(uow, contracts.KIND_PAYOUT)
    assert accounts_handlers.expire_transfer(uow, idle["transfer_id"], utcnow()) == {
        "expired": True
    }
    _approve(uow, idle)  # the late approval
    assert _holds(uow, idle["transfer_id"]) == []
    assert accounts_handlers.expire_transfer(uow, idle["transfer_id"], utcnow()) == {
        "expired": True
    }  # asked again (transactions crashed before recording it): same answer


@pytest.mark.parametrize("kind", [contracts.KIND_INTERNAL, contracts.KIND_PAYOUT])
def test_an_approval_racing_the_deadline_ends_one_way_only(integration_env, kind):
    """Either the money moves (a posting, or a hold) and the transfer does not
    expire, or it expires and nothing moves; never both."""
    engine, uow = _uow(integration_env.database_urls["accounts"])
    engine.pool._pool.maxsize = 10
    try:
        for _ in range(15):
            _, transfer = _transfer(uow, kind)
            pool = eventlet.GreenPool(2)
            pool.spawn(_approve, uow, transfer)
            expired = pool.spawn(
                accounts_handlers.expire_transfer, uow, transfer["transfer_id"], utcnow()
            )
            pool.waitall()
            moved = _entries(uow, transfer["transfer_id"]) or [
                h for h in _holds(uow, transfer["transfer_id"]) if h.status == "active"
            ]
            assert expired.wait()["expired"] != bool(moved), (expired.wait(), moved)
    finally:
        engine.dispose()

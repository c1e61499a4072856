"""Saga steps delivered out of order (and more than once) still settle correctly."""

import uuid

import eventlet
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.accounts import handlers as accounts_handlers
from services.accounts import ledger, saga
from services.accounts.models import Balance, Hold
from services.accounts.service import AccountsService
from services.transactions import handlers as transactions_handlers
from services.transactions.service import TransactionsService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.events import envelope
from shared.sqltypes import utcnow


def _uow(url, pool_size=2):
    engine = make_engine(url, pool_size=pool_size)
    return engine, UnitOfWork(sessionmaker(engine, expire_on_commit=False), lambda: None)


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


def test_the_final_step_arriving_first_completes_the_transfer_once(services, rpc, uows, event_tap):
    completed = event_tap("transactions", contracts.TRANSFER_COMPLETED)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a = rpc.accounts.open_account(alice, "EUR")["account_id"]
    b = rpc.accounts.open_account(bob, "EUR")["account_id"]
    transfer_id = rpc.transactions.create_transfer(
        alice,
        "k",
        {
            "kind": "internal",
            "amount": 100,
            "currency": "EUR",
            "from_account_id": a,
            "to_account_id": b,
        },
    )["transfer_id"]
    posted = envelope(contracts.TRANSFER_POSTED, {"transfer_id": transfer_id}, correlation_id="o")
    for message in (
        posted,
        envelope(
            contracts.TRANSFER_ASSESSED,
            {"transfer_id": transfer_id, "decision": "approve"},
            correlation_id="o",
        ),
        posted,  # and a duplicate of it
        envelope(contracts.FUNDS_RESERVED, {"transfer_id": transfer_id}, correlation_id="o"),
    ):
        transactions_handlers.record_saga_step(uows["transactions"], message, utcnow())
    view = rpc.transactions.get_transfer(alice, transfer_id)
    assert view["status"] == "completed"
    assert [s["type"] for s in view["steps"]] == [
        contracts.TRANSFER_POSTED,
        contracts.TRANSFER_ASSESSED,
        contracts.FUNDS_RESERVED,
    ]
    assert completed(of_type=contracts.TRANSFER_COMPLETED) is not None
    assert completed(timeout=1.0, of_type=contracts.TRANSFER_COMPLETED) is None  # only once


def test_an_approval_arriving_after_the_failure_reserves_nothing(uows):
    uow = uows["accounts"]
    account = accounts_handlers.open_account(uow, str(uuid.uuid4()), "EUR", None, utcnow())
    with uow.transaction() as session:
        ledger.credit_deposit(
            session, str(uuid.uuid4()), account["account_id"], 1000, "EUR", utcnow()
        )
    transfer = {
        "transfer_id": str(uuid.uuid4()),
        "kind": "internal",
        "amount": 400,
        "currency": "EUR",
        "from_account_id": account["account_id"],
        "to_account_id": str(uuid.uuid4()),
    }
    # The deadline failed the transfer before risk's approval was delivered.
    saga.on_transfer_ended(
        uow,
        envelope(
            contracts.TRANSFER_FAILED,
            {"transfer_id": transfer["transfer_id"], "reason": "timed_out", "transfer": transfer},
            correlation_id="o",
        ),
        utcnow(),
    )
    saga.on_transfer_assessed(
        uow,
        envelope(
            contracts.TRANSFER_ASSESSED,
            {
                "transfer_id": transfer["transfer_id"],
                "decision": "approve",
                "score": 0,
                "reasons": [],
                "transfer": transfer,
            },
            correlation_id="o",
        ),
        utcnow(),
    )
    with uow.transaction() as session:
        holds = session.scalars(
            select(Hold).where(Hold.transfer_id == transfer["transfer_id"])
        ).all()
        balance = session.get(Balance, account["account_id"])
    assert holds == []
    assert (balance.balance, balance.held) == (1000, 0)


def _funded_transfer(uow, amount=400):
    account = accounts_handlers.open_account(uow, str(uuid.uuid4()), "EUR", None, utcnow())
    with uow.transaction() as session:
        ledger.credit_deposit(
            session, str(uuid.uuid4()), account["account_id"], 1000, "EUR", utcnow()
        )
    return account, {
        "transfer_id": str(uuid.uuid4()),
        "kind": "payout",
        "amount": amount,
        "currency": "EUR",
        "from_account_id": account["account_id"],
        "to_account_id": None,
    }


def _approve(uow, transfer):
    saga.on_transfer_assessed(
        uow,
        envelope(
            contracts.TRANSFER_ASSESSED,
            {
                "transfer_id": transfer["transfer_id"],
                "decision": "approve",
                "score": 0,
                "reasons": [],
                "transfer": transfer,
            },
            correlation_id="o",
        ),
        utcnow(),
    )


def _holds(uow, transfer_id):
    with uow.transaction() as session:
        return session.scalars(select(Hold).where(Hold.transfer_id == transfer_id)).all()


def test_a_transfer_with_reserved_funds_never_expires_and_an_expired_one_is_never_reserved(uows):
    uow = uows["accounts"]
    _, reserved = _funded_transfer(uow)
    _approve(uow, reserved)
    assert accounts_handlers.expire_transfer(uow, reserved["transfer_id"], utcnow()) == {
        "expired": False
    }  # the money is held: the payout must run its course

    _, idle = _funded_transfer(uow)
    assert accounts_handlers.expire_transfer(uow, idle["transfer_id"], utcnow()) == {
        "expired": True
    }
    _approve(uow, idle)  # the late approval
    assert _holds(uow, idle["transfer_id"]) == []
    assert accounts_handlers.expire_transfer(uow, idle["transfer_id"], utcnow()) == {
        "expired": True
    }  # asked again (transactions crashed before recording it): same answer


def test_an_approval_racing_the_deadline_ends_one_way_only(integration_env):
    """Either the hold is placed and the transfer does not expire, or it expires
    and nothing is held; never both (the per-transfer lock)."""
    engine, uow = _uow(integration_env.database_urls["accounts"])
    engine.pool._pool.maxsize = 10
    try:
        for _ in range(15):
            _, transfer = _funded_transfer(uow)
            pool = eventlet.GreenPool(2)
            pool.spawn(_approve, uow, transfer)
            expired = pool.spawn(
                accounts_handlers.expire_transfer, uow, transfer["transfer_id"], utcnow()
            )
            pool.waitall()
            held = [h for h in _holds(uow, transfer["transfer_id"]) if h.status == "active"]
            assert expired.wait()["expired"] != bool(held), (expired.wait(), held)
    finally:
        engine.dispose()

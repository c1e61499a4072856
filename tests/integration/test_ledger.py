"""The ledger on real PostgreSQL: holds, postings, and no overdraft under concurrency."""

import uuid

import eventlet
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.accounts import handlers, ledger
from services.accounts.models import Balance, Hold, Posting
from services.accounts.service import AccountsService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.errors import InvalidInput, NotFound
from shared.sqltypes import utcnow


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["accounts"], pool_size=25)
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def open_account(uow, owner=None, currency="EUR"):
    return handlers.open_account(uow, owner or str(uuid.uuid4()), currency, None, utcnow())


def fund(uow, account, amount):
    with uow.commit_on_exit() as session:
        entry = ledger.credit_deposit(
            session, str(uuid.uuid4()), account["account_id"], amount, account["currency"], utcnow()
        )
    assert isinstance(entry, str)


def balance_of(uow, account_id):
    with uow.commit_on_exit() as session:
        row = session.get(Balance, account_id)
        return row.balance, row.held


def test_a_deposit_is_credited_once_per_transfer_from_the_clearing_account(uow):
    account = open_account(uow)
    transfer_id = str(uuid.uuid4())
    with uow.commit_on_exit() as session:
        first = ledger.credit_deposit(
            session, transfer_id, account["account_id"], 2500, "EUR", utcnow()
        )
    with uow.commit_on_exit() as session:
        again = ledger.credit_deposit(
            session, transfer_id, account["account_id"], 2500, "EUR", utcnow()
        )
        postings = session.scalars(select(Posting).where(Posting.entry_id == first)).all()
    assert again == first
    assert sorted(p.amount for p in postings) == [-2500, 2500]
    assert balance_of(uow, account["account_id"]) == (2500, 0)
    clearing = ledger.system_account_id(ledger.CARD_CLEARING, "EUR")
    assert {p.account_id for p in postings} == {clearing, account["account_id"]}


def test_a_hold_reserves_once_and_refuses_more_than_is_available(uow):
    account = open_account(uow)
    fund(uow, account, 1000)
    transfer_id = str(uuid.uuid4())
    with uow.commit_on_exit() as session:
        hold = ledger.place_hold(session, transfer_id, account["account_id"], 600, "EUR", utcnow())
    with uow.commit_on_exit() as session:
        same = ledger.place_hold(session, transfer_id, account["account_id"], 600, "EUR", utcnow())
        refused = ledger.place_hold(
            session, str(uuid.uuid4()), account["account_id"], 401, "EUR", utcnow()
        )
    assert same.hold_id == hold.hold_id
    assert refused == ledger.Refused(contracts.REASON_INSUFFICIENT_FUNDS)
    assert balance_of(uow, account["account_id"]) == (1000, 600)
    assert (
        handlers.get_account(uow, account["owner_id"], account["account_id"])["available_balance"]
        == 400
    )


def test_concurrent_reservations_never_overdraw(uow):
    account = open_account(uow)
    fund(uow, account, 1000)

    def reserve(_):
        with uow.commit_on_exit() as session:
            outcome = ledger.place_hold(
                session, str(uuid.uuid4()), account["account_id"], 100, "EUR", utcnow()
            )
        return isinstance(outcome, ledger.Reserved)

    outcomes = list(eventlet.GreenPool(20).imap(reserve, range(20)))
    assert outcomes.count(True) == 10
    assert balance_of(uow, account["account_id"]) == (1000, 1000)


def post(uow, transfer_id, sender, receiver, amount, reference=None):
    with uow.commit_on_exit() as session:
        return ledger.post_transfer(
            session,
            transfer_id,
            sender["account_id"],
            receiver["account_id"],
            amount,
            "EUR",
            reference,
            utcnow(),
        )


def test_an_internal_transfer_is_one_balanced_entry_posted_once(uow):
    sender, receiver = open_account(uow), open_account(uow)
    fund(uow, sender, 1000)
    transfer_id = str(uuid.uuid4())
    entry = post(uow, transfer_id, sender, receiver, 300, "rent")
    again = post(uow, transfer_id, sender, receiver, 300, "rent")
    with uow.commit_on_exit() as session:
        total = session.scalar(
            select(func.sum(Posting.amount)).where(Posting.entry_id == entry.entry_id)
        )
        holds = session.scalars(select(Hold).where(Hold.transfer_id == transfer_id)).all()
    assert isinstance(entry, ledger.Posted) and again == entry and total == 0
    assert holds == []  # both accounts are in this ledger: nothing to hold
    assert balance_of(uow, sender["account_id"]) == (700, 0)
    assert balance_of(uow, receiver["account_id"]) == (300, 0)


def test_an_internal_transfer_beyond_the_available_balance_is_refused_and_moves_nothing(uow):
    sender, receiver = open_account(uow), open_account(uow)
    fund(uow, sender, 1000)
    with uow.commit_on_exit() as session:
        ledger.place_hold(session, str(uuid.uuid4()), sender["account_id"], 800, "EUR", utcnow())
    transfer_id = str(uuid.uuid4())
    refused = post(uow, transfer_id, sender, receiver, 201)
    assert refused == ledger.Refused(contracts.REASON_INSUFFICIENT_FUNDS)
    assert post(uow, transfer_id, sender, receiver, 201) == refused  # asked again: same answer
    usd = open_account(uow, currency="USD")
    assert post(uow, str(uuid.uuid4()), sender, usd, 100) == ledger.Refused(
        contracts.REASON_ACCOUNT_UNAVAILABLE
    )
    assert balance_of(uow, sender["account_id"]) == (1000, 800)
    assert balance_of(uow, receiver["account_id"]) == (0, 0)


def test_concurrent_transfers_never_overdraw_and_opposite_ones_never_deadlock(uow):
    alice, bob = open_account(uow), open_account(uow)
    fund(uow, alice, 1000)
    fund(uow, bob, 1000)

    def move(n):
        sender, receiver = (alice, bob) if n % 2 else (bob, alice)
        return post(uow, str(uuid.uuid4()), sender, receiver, 150 if n % 2 else 50)

    outcomes = list(eventlet.GreenPool(20).imap(move, range(40)))
    posted_from_alice = sum(isinstance(o, ledger.Posted) for n, o in enumerate(outcomes) if n % 2)
    alice_balance, _ = balance_of(uow, alice["account_id"])
    bob_balance, _ = balance_of(uow, bob["account_id"])
    assert alice_balance >= 0 and bob_balance >= 0
    assert alice_balance + bob_balance == 2000
    assert posted_from_alice >= 6  # 1000 / 150, and more as bob's transfers come in


def test_a_payout_is_captured_or_released_exactly_once(uow):
    account = open_account(uow)
    fund(uow, account, 1000)
    paid, refused = str(uuid.uuid4()), str(uuid.uuid4())
    with uow.commit_on_exit() as session:
        ledger.place_hold(session, paid, account["account_id"], 400, "EUR", utcnow())
        ledger.place_hold(session, refused, account["account_id"], 200, "EUR", utcnow())
    with uow.commit_on_exit() as session:
        entry = ledger.capture_payout(session, paid, utcnow())
        released = ledger.release_hold(session, refused, utcnow())
    with uow.commit_on_exit() as session:
        assert ledger.capture_payout(session, paid, utcnow()) == entry
        assert ledger.release_hold(session, refused, utcnow()) is None  # already released
        assert ledger.release_hold(session, paid, utcnow()) is None  # captured: not releasable
    assert released.amount == 200
    assert balance_of(uow, account["account_id"]) == (600, 0)


def test_money_is_conserved_across_customer_and_clearing_accounts(uow):
    """A full cycle in a currency no other test uses (others write raw SQL on
    purpose): deposit, internal transfer, payout, released hold."""
    now = utcnow()
    alice, bob = open_account(uow, currency="CHF"), open_account(uow, currency="CHF")
    moves = [str(uuid.uuid4()) for _ in range(4)]
    with uow.commit_on_exit() as session:
        ledger.credit_deposit(session, moves[0], alice["account_id"], 10_000, "CHF", now)
        ledger.post_transfer(
            session, moves[1], alice["account_id"], bob["account_id"], 2_500, "CHF", None, now
        )
        ledger.place_hold(session, moves[2], alice["account_id"], 1_000, "CHF", now)
        ledger.capture_payout(session, moves[2], now)
        ledger.place_hold(session, moves[3], bob["account_id"], 500, "CHF", now)
        ledger.release_hold(session, moves[3], now)
    with uow.commit_on_exit() as session:
        balances = dict(
            session.execute(
                select(Balance.account_id, Balance.balance).where(Balance.currency == "CHF")
            ).all()
        )
        postings = session.scalar(select(func.sum(Posting.amount)).where(Posting.currency == "CHF"))
        held = session.scalar(select(func.sum(Balance.held)).where(Balance.currency == "CHF"))
    assert sum(balances.values()) == 0 and postings == 0 and held == 0
    assert (balances[alice["account_id"]], balances[bob["account_id"]]) == (6_500, 2_500)
    assert balances[ledger.system_account_id(ledger.CARD_CLEARING, "CHF")] == -10_000
    assert balances[ledger.system_account_id(ledger.PAYOUT_CLEARING, "CHF")] == 1_000


@pytest.fixture
def accounts(container_factory, config):
    container = container_factory(AccountsService, config)
    container.start()
    return container


def test_transfer_checks_refuse_foreign_mismatched_and_unknown_accounts(accounts, rpc):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    eur = rpc.accounts.open_account(alice, "EUR")
    usd = rpc.accounts.open_account(alice, "USD")
    bobs = rpc.accounts.open_account(bob, "EUR")
    checked = rpc.accounts.check_transfer(
        alice, "internal", "EUR", eur["account_id"], bobs["account_id"]
    )
    assert checked["to_owner_id"] == bob
    assert {a["account_id"]: (a["owner_id"], a["currency"]) for a in checked["accounts"]} == {
        eur["account_id"]: (alice, "EUR"),
        bobs["account_id"]: (bob, "EUR"),
    }
    with pytest.raises(InvalidInput) as mismatch:
        rpc.accounts.check_transfer(alice, "internal", "EUR", eur["account_id"], usd["account_id"])
    assert mismatch.value.code == "currency_mismatch"
    with pytest.raises(NotFound):
        rpc.accounts.check_transfer(bob, "payout", "EUR", eur["account_id"], None)
    with pytest.raises(InvalidInput) as unknown:
        rpc.accounts.check_transfer(alice, "internal", "EUR", eur["account_id"], str(uuid.uuid4()))
    assert "to_account_id" in unknown.value.errors
    with pytest.raises(InvalidInput):
        rpc.accounts.check_transfer(alice, "internal", "EUR", eur["account_id"], eur["account_id"])
    deposit = rpc.accounts.check_transfer(alice, "deposit", "USD", None, usd["account_id"])
    assert deposit["to_owner_id"] == alice

"""accounts on the real broker and PostgreSQL: ownership, balances, ledger guards."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from services.accounts.service import AccountsService
from shared import contracts
from shared.errors import InvalidInput, NotFound


@pytest.fixture
def accounts(container_factory, config):
    container = container_factory(AccountsService, config)
    container.start()
    return container


def owner():
    return str(uuid.uuid4())


def test_opening_an_account_starts_it_empty_and_announces_it(accounts, rpc, sql, event_tap):
    opened = event_tap("accounts", contracts.ACCOUNT_OPENED)
    alice = owner()
    account = rpc.accounts.open_account(alice, "EUR", "Main")
    assert account["currency"] == "EUR" and account["status"] == "active"
    assert account["balance"] == 0 and account["available_balance"] == 0
    assert sql(
        "accounts",
        "SELECT balance, held FROM balances WHERE account_id = :id",
        id=account["account_id"],
    ) == [(0, 0)]
    event = opened(of_type=contracts.ACCOUNT_OPENED)
    assert event.payload["payload"]["account_id"] == account["account_id"]
    assert event.payload["payload"]["owner_id"] == alice


def test_accounts_are_listed_and_read_only_by_their_owner(accounts, rpc):
    alice, bob = owner(), owner()
    eur = rpc.accounts.open_account(alice, "EUR", None)
    jpy = rpc.accounts.open_account(alice, "JPY", "Yen")
    assert eur["name"] == "EUR account"
    assert [a["account_id"] for a in rpc.accounts.list_accounts(alice)] == [
        eur["account_id"],
        jpy["account_id"],
    ]
    assert rpc.accounts.list_accounts(bob) == []
    assert rpc.accounts.get_account(alice, jpy["account_id"])["currency"] == "JPY"
    with pytest.raises(NotFound):
        rpc.accounts.get_account(bob, eur["account_id"])
    with pytest.raises(NotFound):
        rpc.accounts.list_transactions(bob, eur["account_id"])


def test_unsupported_currency_and_malformed_ids_change_nothing(accounts, rpc, sql):
    alice = owner()
    with pytest.raises(InvalidInput):
        rpc.accounts.open_account(alice, "XYZ")
    with pytest.raises(InvalidInput):
        rpc.accounts.open_account("not-a-uuid", "EUR")
    with pytest.raises(InvalidInput):
        rpc.accounts.get_account(alice, "not-a-uuid")
    assert sql("accounts", "SELECT count(*) FROM accounts WHERE owner_id = :o", o=alice) == [(0,)]


def _post(sql, account_id, amount, balance_after, transfer_id=None):
    entry_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    sql(
        "accounts",
        "INSERT INTO journal_entries (id, transfer_id, description, created_at) "
        "VALUES (:id, :t, 'test entry', :now)",
        id=entry_id,
        t=transfer_id,
        now=now,
    )
    sql(
        "accounts",
        "INSERT INTO postings (entry_id, account_id, amount, currency, "
        "balance_after, created_at) VALUES (:e, :a, :amt, 'EUR', :after, :now)",
        e=entry_id,
        a=account_id,
        amt=amount,
        after=balance_after,
        now=now,
    )
    return entry_id


def test_history_pages_newest_first_with_a_cursor(accounts, rpc, sql):
    alice = owner()
    account = rpc.accounts.open_account(alice, "EUR")
    entries = [_post(sql, account["account_id"], 100 * (i + 1), 100 * (i + 1)) for i in range(5)]
    first = rpc.accounts.list_transactions(alice, account["account_id"], 2)
    assert [i["entry_id"] for i in first["items"]] == entries[:-3:-1]
    second = rpc.accounts.list_transactions(alice, account["account_id"], 2, first["next_cursor"])
    third = rpc.accounts.list_transactions(alice, account["account_id"], 2, second["next_cursor"])
    assert [i["entry_id"] for i in second["items"]] == [entries[2], entries[1]]
    assert [i["entry_id"] for i in third["items"]] == [entries[0]]
    assert third["next_cursor"] is None
    with pytest.raises(InvalidInput):
        rpc.accounts.list_transactions(alice, account["account_id"], 2, "'; DROP TABLE")


def test_the_database_refuses_an_overdraft_even_from_a_buggy_writer(accounts, rpc, sql):
    account = rpc.accounts.open_account(owner(), "EUR")
    sql(
        "accounts",
        "UPDATE balances SET balance = 500 WHERE account_id = :id",
        id=account["account_id"],
    )
    with pytest.raises(IntegrityError, match="no_overdraft"):
        sql(
            "accounts",
            "UPDATE balances SET held = 501 WHERE account_id = :id",
            id=account["account_id"],
        )
    with pytest.raises(IntegrityError, match="no_overdraft"):
        sql(
            "accounts",
            "UPDATE balances SET balance = -1 WHERE account_id = :id",
            id=account["account_id"],
        )
    with pytest.raises(IntegrityError, match="amount_not_zero"):
        _post(sql, account["account_id"], 0, 500)
    assert (
        rpc.accounts.get_account(account["owner_id"], account["account_id"])["available_balance"]
        == 500
    )

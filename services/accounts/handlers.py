"""accounts' use cases. Every query is scoped to the owner asking."""

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import func, select

from services.accounts import ledger
from services.accounts.domain import (
    MAX_ACCOUNTS_PER_OWNER,
    AccountKind,
    AccountStatus,
    account_name,
    available_balance,
    check_currency,
)
from services.accounts.models import Account, Balance, JournalEntry, Posting
from shared import contracts, transfer_checks
from shared.database import UnitOfWork
from shared.errors import Conflict, NotFound
from shared.outbox import stage
from shared.schemas import position_cursor
from shared.transfer_checks import AccountFacts

_accounts = Account.__table__
_balances = Balance.__table__
# An account as its owner sees it: its row and its balance.
_ACCOUNT_VIEW = select(
    _accounts.c.id,
    _accounts.c.owner_id,
    _accounts.c.currency,
    _accounts.c.name,
    _accounts.c.status,
    _accounts.c.created_at,
    _balances.c.balance,
    _balances.c.held,
).join(_balances, _balances.c.account_id == _accounts.c.id)


def _view(row: Mapping) -> dict:
    """An account as its owner sees it, from the columns of _ACCOUNT_VIEW."""
    return {
        "account_id": row["id"],
        "owner_id": row["owner_id"],
        "currency": row["currency"],
        "name": row["name"],
        "status": row["status"],
        "balance": row["balance"],
        "available_balance": available_balance(row["balance"], row["held"]),
        "created_at": row["created_at"].isoformat(),
    }


def _owned(connection, owner_id: str, account_id: str):
    """The account if `owner_id` owns it; otherwise it does not exist for them."""
    row = connection.execute(
        _ACCOUNT_VIEW.where(
            _accounts.c.id == account_id,
            _accounts.c.owner_id == owner_id,
            _accounts.c.kind == AccountKind.CUSTOMER,
        )
    ).first()
    if row is None:
        raise NotFound("account_not_found", "No such account.")
    return row._mapping


def open_account(
    uow: UnitOfWork, owner_id: str, currency: str, name: str | None, now: datetime
) -> dict:
    currency = check_currency(currency)
    name = account_name(name, currency)
    account_id = str(uuid.uuid4())
    with uow.commit_on_exit() as session:
        count = session.scalar(
            select(func.count()).select_from(Account).where(Account.owner_id == owner_id)
        )
        if count >= MAX_ACCOUNTS_PER_OWNER:
            raise Conflict(
                "too_many_accounts",
                f"A customer may hold at most {MAX_ACCOUNTS_PER_OWNER} accounts.",
            )
        account = Account(
            id=account_id,
            owner_id=owner_id,
            kind=AccountKind.CUSTOMER,
            currency=currency,
            name=name,
            status=AccountStatus.ACTIVE,
            created_at=now,
        )
        balance = Balance(
            account_id=account_id,
            currency=currency,
            balance=0,
            held=0,
            allow_negative=False,
            updated_at=now,
        )
        session.add(account)
        session.flush()
        session.add(balance)
        stage(
            session,
            contracts.AccountOpened(
                account_id=account_id, owner_id=owner_id, currency=currency, name=name
            ),
        )
    return _view(
        {
            "id": account_id,
            "owner_id": owner_id,
            "currency": currency,
            "name": name,
            "status": AccountStatus.ACTIVE,
            "created_at": now,
            "balance": 0,
            "held": 0,
        }
    )


def list_accounts(uow: UnitOfWork, owner_id: str) -> list[dict]:
    with uow.read() as connection:
        rows = connection.execute(
            _ACCOUNT_VIEW.where(
                _accounts.c.owner_id == owner_id, _accounts.c.kind == AccountKind.CUSTOMER
            ).order_by(_accounts.c.created_at, _accounts.c.id)
        ).all()
    return [_view(row._mapping) for row in rows]


def get_account(uow: UnitOfWork, owner_id: str, account_id: str) -> dict:
    with uow.read() as connection:
        return _view(_owned(connection, owner_id, account_id))


def list_transactions(
    uow: UnitOfWork, owner_id: str, account_id: str, limit: int, cursor: str | None
) -> dict:
    """The account's postings, newest first, with keyset pagination."""
    before = position_cursor(cursor)
    postings, entries = Posting.__table__, JournalEntry.__table__
    query = (
        select(
            postings.c.id,
            postings.c.amount,
            postings.c.currency,
            postings.c.balance_after,
            postings.c.created_at,
            entries.c.id.label("entry_id"),
            entries.c.transfer_id,
            entries.c.description,
        )
        .join(entries, entries.c.id == postings.c.entry_id)
        # The account as a range of one, ordered by (account, id): only the
        # account's own index gives that order, so the planner never walks
        # every posting of the bank backwards (which it may for `=` and
        # "ORDER BY id" when an account's postings are not the newest).
        .where(postings.c.account_id >= account_id, postings.c.account_id <= account_id)
        .order_by(postings.c.account_id.desc(), postings.c.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(postings.c.id < before)
    with uow.read() as connection:
        _owned(connection, owner_id, account_id)  # who owns an account never changes
        rows = connection.execute(query).all()
    page = rows[:limit]
    items = [
        {
            "entry_id": row.entry_id,
            "transfer_id": row.transfer_id,
            "amount": row.amount,
            "currency": row.currency,
            "balance_after": row.balance_after,
            "description": row.description,
            "created_at": row.created_at.isoformat(),
        }
        for row in page
    ]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


def check_transfer(
    uow: UnitOfWork,
    owner_id: str,
    kind: str,
    currency: str,
    from_account_id: str | None,
    to_account_id: str | None,
) -> dict:
    """May `owner_id` move `currency` between these accounts? Raises if not
    (shared.transfer_checks). Returns the receiving account's owner and the
    facts of both accounts, which the caller may keep (see that module)."""
    ids = [i for i in (from_account_id, to_account_id) if i]
    with uow.commit_on_exit() as session:
        found = {
            row.id: AccountFacts(row.id, row.owner_id, row.kind, row.currency, row.status)
            for row in session.execute(
                select(
                    Account.id, Account.owner_id, Account.kind, Account.currency, Account.status
                ).where(Account.id.in_(ids))
            )
        }
    to_owner_id = transfer_checks.check_transfer(
        owner_id,
        kind,
        currency,
        found.get(from_account_id),
        found.get(to_account_id),
        from_account_id=from_account_id,
        to_account_id=to_account_id,
    )
    return {"to_owner_id": to_owner_id, "accounts": [f.as_dict() for f in found.values()]}


def expire_transfer(uow: UnitOfWork, transfer_id: str, now: datetime) -> dict:
    """Asked by transactions when a transfer passes its deadline (see ledger.expire)."""
    with uow.commit_on_exit() as session:
        ledger.lock_transfer(session, transfer_id)
        return {"expired": ledger.expire(session, transfer_id, now)}

"""accounts' use cases. Every query is scoped to the owner asking."""

import re
import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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
from shared.errors import Conflict, InvalidInput, NotFound
from shared.outbox import stage
from shared.transfer_checks import AccountFacts


def _view(account: Account, balance: Balance) -> dict:
    return {
        "account_id": account.id,
        "owner_id": account.owner_id,
        "currency": account.currency,
        "name": account.name,
        "status": account.status,
        "balance": balance.balance,
        "available_balance": available_balance(balance.balance, balance.held),
        "created_at": account.created_at.isoformat(),
    }


def _owned(session: Session, owner_id: str, account_id: str) -> tuple[Account, Balance]:
    """The account if `owner_id` owns it; otherwise it does not exist for them."""
    row = session.execute(
        select(Account, Balance)
        .join(Balance, Balance.account_id == Account.id)
        .where(
            Account.id == account_id,
            Account.owner_id == owner_id,
            Account.kind == AccountKind.CUSTOMER,
        )
    ).first()
    if row is None:
        raise NotFound("account_not_found", "No such account.")
    return row


def open_account(
    uow: UnitOfWork, owner_id: str, currency: str, name: str | None, now: datetime
) -> dict:
    currency = check_currency(currency)
    name = account_name(name, currency)
    account_id = str(uuid.uuid4())
    with uow.transaction() as session:
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
        return _view(account, balance)


def list_accounts(uow: UnitOfWork, owner_id: str) -> list[dict]:
    with uow.transaction() as session:
        rows = session.execute(
            select(Account, Balance)
            .join(Balance, Balance.account_id == Account.id)
            .where(Account.owner_id == owner_id, Account.kind == AccountKind.CUSTOMER)
            .order_by(Account.created_at, Account.id)
        ).all()
        return [_view(account, balance) for account, balance in rows]


def get_account(uow: UnitOfWork, owner_id: str, account_id: str) -> dict:
    with uow.transaction() as session:
        return _view(*_owned(session, owner_id, account_id))


def list_transactions(
    uow: UnitOfWork, owner_id: str, account_id: str, limit: int, cursor: str | None
) -> dict:
    """The account's postings, newest first, with keyset pagination."""
    before = _decode_cursor(cursor)
    with uow.transaction() as session:
        _owned(session, owner_id, account_id)
        query = (
            select(Posting, JournalEntry)
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(Posting.account_id == account_id)
            .order_by(Posting.id.desc())
            .limit(limit + 1)
        )
        if before is not None:
            query = query.where(Posting.id < before)
        rows = session.execute(query).all()
    page = rows[:limit]
    items = [
        {
            "entry_id": entry.id,
            "transfer_id": entry.transfer_id,
            "amount": posting.amount,
            "currency": posting.currency,
            "balance_after": posting.balance_after,
            "description": entry.description,
            "created_at": posting.created_at.isoformat(),
        }
        for posting, entry in page
    ]
    next_cursor = str(page[-1][0].id) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


# A posting or event position: at most 18 digits fits any 64-bit integer column.
_CURSOR = re.compile(r"^[0-9]{1,18}$")


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    if not _CURSOR.match(cursor):
        raise InvalidInput(
            "invalid_cursor",
            "The cursor is not valid.",
            {"cursor": ["Not a cursor returned by this endpoint."]},
        )
    return int(cursor)


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
    with uow.transaction() as session:
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
    with uow.transaction() as session:
        ledger.lock_transfer(session, transfer_id)
        return {"expired": ledger.expire(session, transfer_id, now)}

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
from shared import contracts
from shared.database import UnitOfWork
from shared.errors import Conflict, InvalidInput, NotFound
from shared.outbox import record_event


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
        record_event(
            session,
            contracts.ACCOUNT_OPENED,
            {
                "account_id": account_id,
                "owner_id": owner_id,
                "currency": currency,
                "name": name,
            },
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
    """May `owner_id` move `currency` between these accounts? Raises if not.

    The paying account must be the caller's own (404 otherwise, as for any
    other user's resource); the receiving account of an internal transfer
    may be anyone's. Returns the receiving account's owner.
    """
    with uow.transaction() as session:
        if kind == contracts.KIND_DEPOSIT:
            account, _ = _owned(session, owner_id, to_account_id)
            _check_usable(account, currency, "to_account_id")
            return {"to_owner_id": owner_id}
        account, _ = _owned(session, owner_id, from_account_id)
        _check_usable(account, currency, "from_account_id")
        if kind == contracts.KIND_PAYOUT:
            return {"to_owner_id": None}
        if to_account_id == from_account_id:
            raise _field_error("same_account", "to_account_id", "Must differ from from_account_id.")
        receiver = session.get(Account, to_account_id)
        if receiver is None or receiver.kind != AccountKind.CUSTOMER:
            raise _field_error("unknown_account", "to_account_id", "No such account.")
        _check_usable(receiver, currency, "to_account_id")
        return {"to_owner_id": receiver.owner_id}


def _check_usable(account: Account, currency: str, field: str) -> None:
    if account.status != AccountStatus.ACTIVE:
        raise _field_error("account_inactive", field, "The account is not active.")
    if account.currency != currency:
        raise _field_error(
            "currency_mismatch",
            "currency",
            f"The account holds {account.currency}, not {currency}.",
        )


def _field_error(code: str, field: str, message: str) -> InvalidInput:
    return InvalidInput(code, message, {field: [message]})


def expire_transfer(uow: UnitOfWork, transfer_id: str, now: datetime) -> dict:
    """Asked by transactions when a transfer passes its deadline (see ledger.expire)."""
    with uow.transaction() as session:
        ledger.lock_transfer(session, transfer_id)
        return {"expired": ledger.expire(session, transfer_id, now)}

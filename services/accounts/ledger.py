"""Money movement in the ledger: holds and postings, each once per transfer.

Every function here runs inside the caller's transaction (the saga step's,
with its inbox claim and outbox events) and is idempotent per transfer on
its own as well: a hold is unique per (transfer, account), an entry per
(transfer, kind).

No overdraft, without check-then-write: reserving funds is a single
`UPDATE balances SET held = held + :amount WHERE ... AND balance - held >=
:amount`. The database evaluates the condition and writes under the row's
lock, so of two concurrent reservations that together exceed the available
balance, exactly one matches. The CHECK constraint on `balances` backs it.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from services.accounts.domain import (
    AccountKind,
    AccountStatus,
    HoldStatus,
    check_balanced,
)
from services.accounts.domain import (
    Posting as PostingLine,
)
from services.accounts.models import (
    Account,
    Balance,
    ClosedTransfer,
    Hold,
    JournalEntry,
    Posting,
)
from shared import contracts

# The bank's side of money that enters or leaves through a payment provider.
CARD_CLEARING = "card-clearing"
PAYOUT_CLEARING = "payout-clearing"
_SYSTEM_NAMESPACE = uuid.UUID("5b0d6f0e-3f57-4a1c-9a0b-6d1f2c7e9a11")


@dataclass(frozen=True)
class Reserved:
    hold_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Refused:
    reason: str


def system_account_id(purpose: str, currency: str) -> str:
    """Stable id of the bank's clearing account for a purpose and currency."""
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, f"{purpose}:{currency}"))


def _ensure_system_account(session: Session, purpose: str, currency: str, now: datetime) -> str:
    account_id = system_account_id(purpose, currency)
    if session.get(Account, account_id) is None:
        session.add(
            Account(
                id=account_id,
                owner_id=None,
                kind=AccountKind.SYSTEM,
                currency=currency,
                name=f"{purpose} {currency}",
                status=AccountStatus.ACTIVE,
                created_at=now,
            )
        )
        session.flush()
        session.add(
            Balance(
                account_id=account_id,
                currency=currency,
                balance=0,
                held=0,
                allow_negative=True,
                updated_at=now,
            )
        )
        session.flush()
    return account_id


def lock_transfer(session: Session, transfer_id: str) -> None:
    """Serialise everything accounts does for one transfer, until commit.

    Two steps of one transfer (an approval and a failure, a posting and an
    expiry) must never interleave: each would decide on what it read before
    the other committed. On PostgreSQL a transaction-scoped advisory lock on
    the transfer id; SQLite gives a service process one connection, so its
    transactions are serial already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(transfer_id, 0))))


def expire(session: Session, transfer_id: str, now: datetime) -> bool:
    """The deadline's question, answered by the one who moves the money.

    Expires (closes as timed out) a transfer only while no money has moved
    or been reserved for it here: no hold and no entry. Once either exists,
    the transfer must run its course (its own events complete or compensate
    it), so the answer is no. Call under lock_transfer.
    """
    closed = session.get(ClosedTransfer, transfer_id)
    if closed is not None:
        return closed.outcome == contracts.REASON_TIMED_OUT
    touched = session.scalar(select(Hold.id).where(Hold.transfer_id == transfer_id).limit(1))
    touched = touched or _entry_for_any_kind(session, transfer_id)
    if touched:
        return False
    close(session, transfer_id, contracts.REASON_TIMED_OUT, now)
    return True


def _entry_for_any_kind(session: Session, transfer_id: str) -> str | None:
    return session.scalar(
        select(JournalEntry.id).where(JournalEntry.transfer_id == transfer_id).limit(1)
    )


def is_closed(session: Session, transfer_id: str) -> bool:
    return session.get(ClosedTransfer, transfer_id) is not None


def close(session: Session, transfer_id: str, outcome: str, now: datetime) -> None:
    if not is_closed(session, transfer_id):
        session.add(ClosedTransfer(transfer_id=transfer_id, outcome=outcome, closed_at=now))


def _usable(session: Session, account_id: str, currency: str) -> Account | None:
    account = session.get(Account, account_id)
    if account is None or account.status != AccountStatus.ACTIVE or account.currency != currency:
        return None
    return account


def place_hold(
    session: Session, transfer_id: str, account_id: str, amount: int, currency: str, now: datetime
) -> Reserved | Refused:
    existing = session.scalar(
        select(Hold).where(Hold.transfer_id == transfer_id, Hold.account_id == account_id)
    )
    if existing is not None:
        if existing.status == HoldStatus.RELEASED:
            return Refused(contracts.REASON_TIMED_OUT)
        return Reserved(existing.id, account_id, existing.amount, existing.currency)
    if _usable(session, account_id, currency) is None:
        return Refused(contracts.REASON_ACCOUNT_UNAVAILABLE)
    reserved = session.execute(
        update(Balance)
        .where(Balance.account_id == account_id, Balance.balance - Balance.held >= amount)
        .values(held=Balance.held + amount, updated_at=now)
    ).rowcount
    if not reserved:
        return Refused(contracts.REASON_INSUFFICIENT_FUNDS)
    hold_id = str(uuid.uuid4())
    session.add(
        Hold(
            id=hold_id,
            account_id=account_id,
            transfer_id=transfer_id,
            amount=amount,
            currency=currency,
            status=HoldStatus.ACTIVE,
            created_at=now,
        )
    )
    session.flush()
    return Reserved(hold_id, account_id, amount, currency)


def release_hold(session: Session, transfer_id: str, now: datetime) -> Hold | None:
    """Give reserved funds back; a no-op for a hold already captured or released."""
    hold = session.scalar(
        select(Hold)
        .where(Hold.transfer_id == transfer_id, Hold.status == HoldStatus.ACTIVE)
        .with_for_update()
    )
    if hold is None:
        return None
    hold.status = HoldStatus.RELEASED
    hold.settled_at = now
    session.execute(
        update(Balance)
        .where(Balance.account_id == hold.account_id)
        .values(held=Balance.held - hold.amount, updated_at=now)
    )
    return hold


def _post(
    session: Session,
    transfer_id: str,
    kind: str,
    description: str,
    lines: list[PostingLine],
    now: datetime,
    captured: Hold | None = None,
) -> str:
    """One journal entry; balances updated in account order (no deadlock cycles)."""
    check_balanced(lines)
    entry_id = str(uuid.uuid4())
    session.add(
        JournalEntry(
            id=entry_id, transfer_id=transfer_id, kind=kind, description=description, created_at=now
        )
    )
    session.flush()  # the unique (transfer_id, kind) refuses a second posting here
    for line in sorted(lines, key=lambda line: line.account_id):
        release = captured.amount if captured and captured.account_id == line.account_id else 0
        balance_after = session.execute(
            update(Balance)
            .where(Balance.account_id == line.account_id)
            .values(
                balance=Balance.balance + line.amount, held=Balance.held - release, updated_at=now
            )
            .returning(Balance.balance)
        ).scalar_one()
        session.execute(
            insert(Posting).values(
                entry_id=entry_id,
                account_id=line.account_id,
                amount=line.amount,
                currency=line.currency,
                balance_after=balance_after,
                created_at=now,
            )
        )
    return entry_id


def _entry_for(session: Session, transfer_id: str, kind: str) -> str | None:
    return session.scalar(
        select(JournalEntry.id).where(
            JournalEntry.transfer_id == transfer_id, JournalEntry.kind == kind
        )
    )


def _capture(session: Session, transfer_id: str, now: datetime) -> Hold | None:
    hold = session.scalar(
        select(Hold)
        .where(Hold.transfer_id == transfer_id, Hold.status == HoldStatus.ACTIVE)
        .with_for_update()
    )
    if hold is not None:
        hold.status = HoldStatus.CAPTURED
        hold.settled_at = now
    return hold


def post_internal_transfer(
    session: Session, transfer_id: str, to_account_id: str, reference: str | None, now: datetime
) -> str | Refused:
    """Capture the sender's hold and credit the receiver, in one entry."""
    existing = _entry_for(session, transfer_id, contracts.KIND_INTERNAL)
    if existing:
        return existing
    hold = session.scalar(
        select(Hold).where(Hold.transfer_id == transfer_id, Hold.status == HoldStatus.ACTIVE)
    )
    if hold is None:
        return Refused(contracts.REASON_TIMED_OUT)
    if _usable(session, to_account_id, hold.currency) is None:
        release_hold(session, transfer_id, now)
        return Refused(contracts.REASON_ACCOUNT_UNAVAILABLE)
    captured = _capture(session, transfer_id, now)
    return _post(
        session,
        transfer_id,
        contracts.KIND_INTERNAL,
        reference or "Transfer",
        [
            PostingLine(captured.account_id, -captured.amount, captured.currency),
            PostingLine(to_account_id, captured.amount, captured.currency),
        ],
        now,
        captured=captured,
    )


def credit_deposit(
    session: Session, transfer_id: str, account_id: str, amount: int, currency: str, now: datetime
) -> str | Refused:
    """Money the provider collected from a card lands on the customer's account."""
    existing = _entry_for(session, transfer_id, contracts.KIND_DEPOSIT)
    if existing:
        return existing
    if _usable(session, account_id, currency) is None:
        return Refused(contracts.REASON_ACCOUNT_UNAVAILABLE)
    clearing = _ensure_system_account(session, CARD_CLEARING, currency, now)
    return _post(
        session,
        transfer_id,
        contracts.KIND_DEPOSIT,
        "Card deposit",
        [
            PostingLine(clearing, -amount, currency),
            PostingLine(account_id, amount, currency),
        ],
        now,
    )


def capture_payout(session: Session, transfer_id: str, now: datetime) -> str | Refused:
    """The provider paid the beneficiary: the held funds leave the account."""
    existing = _entry_for(session, transfer_id, contracts.KIND_PAYOUT)
    if existing:
        return existing
    captured = _capture(session, transfer_id, now)
    if captured is None:
        return Refused(contracts.REASON_TIMED_OUT)
    clearing = _ensure_system_account(session, PAYOUT_CLEARING, captured.currency, now)
    return _post(
        session,
        transfer_id,
        contracts.KIND_PAYOUT,
        "Payout",
        [
            PostingLine(captured.account_id, -captured.amount, captured.currency),
            PostingLine(clearing, captured.amount, captured.currency),
        ],
        now,
        captured=captured,
    )

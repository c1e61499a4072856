"""Money movement in the ledger: postings and holds, each once per transfer.

Every function here runs inside the caller's transaction (the saga step's,
with its inbox claim and outbox events) and is idempotent per transfer on
its own as well: an entry is unique per (transfer, kind), a hold per
(transfer, account), and a transfer is closed here once.

No overdraft, without check-then-write: an internal transfer locks both
balance rows (in account-id order, so two opposite transfers cannot
deadlock) and decides on what it holds locked; reserving funds for a
payout is a single `UPDATE balances SET held = held + :amount WHERE ...
AND balance - held >= :amount`, which the database evaluates under the
row's lock. The CHECK constraint on `balances` is the last line behind
both. Statements are SQLAlchemy Core, one round trip each: this is the
platform's hot path.

Closing: `closed_transfers` holds one row per transfer that ended here
(posted, refused, expired, or finished after a payout). Posting an
internal transfer and expiring one both begin by inserting that row, so
of the two the first one wins and the other sees its outcome: they cannot
both happen.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, case, select, update
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
from shared.database import (
    advisory_lock,
    claim_once,
    connection_of,
    defer,
    defer_rows,
    insert_ignoring_duplicates,
    query,
)

# The bank's side of money that enters or leaves through a payment provider.
CARD_CLEARING = "card-clearing"
PAYOUT_CLEARING = "payout-clearing"
_SYSTEM_NAMESPACE = uuid.UUID("5b0d6f0e-3f57-4a1c-9a0b-6d1f2c7e9a11")

# closed_transfers.outcome
POSTED = "posted"
REFUSED = "refused"  # stored as "refused:<reason>"
TIMED_OUT = contracts.REASON_TIMED_OUT

_accounts = Account.__table__
_balances = Balance.__table__
_entries = JournalEntry.__table__
_postings = Posting.__table__
_holds = Hold.__table__
_closed = ClosedTransfer.__table__


@dataclass(frozen=True)
class Reserved:
    hold_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Refused:
    reason: str


@dataclass(frozen=True)
class Posted:
    entry_id: str


@dataclass(frozen=True)
class Released:
    hold_id: str
    account_id: str
    amount: int


def system_account_id(purpose: str, currency: str) -> str:
    """Stable id of the bank's clearing account for a purpose and currency."""
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, f"{purpose}:{currency}"))


def _conn(session: Session):
    return connection_of(session)


def _ensure_system_account(session: Session, purpose: str, currency: str, now: datetime) -> str:
    account_id = system_account_id(purpose, currency)
    created = insert_ignoring_duplicates(
        session,
        _accounts,
        {
            "id": account_id,
            "owner_id": None,
            "kind": AccountKind.SYSTEM,
            "currency": currency,
            "name": f"{purpose} {currency}",
            "status": AccountStatus.ACTIVE,
            "created_at": now,
        },
    )
    if created:
        _conn(session).execute(
            _balances.insert(),
            {
                "account_id": account_id,
                "currency": currency,
                "balance": 0,
                "held": 0,
                "allow_negative": True,
                "updated_at": now,
            },
        )
    return account_id


def transfer_lock(transfer_id: str) -> str:
    """The lock that serialises the steps of one payout, until commit.

    A payout moves money in two steps (reserve, then capture or release)
    that must never interleave with its expiry or its failure: each would
    decide on what it read before the other committed.
    """
    return f"accounts.transfer:{transfer_id}"


def lock_transfer(session: Session, transfer_id: str) -> None:
    advisory_lock(session, transfer_lock(transfer_id))


# -- closing ----------------------------------------------------------------------------


def close_once(session: Session, transfer_id: str, outcome: str, now: datetime) -> str | None:
    """Close the transfer here as `outcome` unless it already is closed.

    Returns None when this call closed it, else the outcome it already had.
    On PostgreSQL a concurrent closer waits for the first to commit and
    then sees its row. In a saga step (`claims_deferred`) the row goes out
    with the next statement, as the step's inbox claim does: closed before
    after all, the step runs again and is told so.
    """
    if claim_once(
        session, _closed, {"transfer_id": transfer_id, "outcome": outcome, "closed_at": now}
    ):
        return None
    return closed_outcome(session, transfer_id)


def closed_outcome(session: Session, transfer_id: str) -> str | None:
    return _conn(session).scalar(
        select(_closed.c.outcome).where(_closed.c.transfer_id == transfer_id)
    )


def is_closed(session: Session, transfer_id: str) -> bool:
    return closed_outcome(session, transfer_id) is not None


def refused_outcome(reason: str) -> str:
    return f"{REFUSED}:{reason}"


def expire(session: Session, transfer_id: str, now: datetime) -> bool:
    """The deadline's question, answered by the one who moves the money.

    Expires (closes as timed out) a transfer only while no money has moved
    or been reserved for it here: no hold and no entry. Once either exists,
    the transfer must run its course (its own events complete or compensate
    it), so the answer is no. Call under lock_transfer (payouts).
    """
    outcome = closed_outcome(session, transfer_id)
    if outcome is not None:
        return outcome == TIMED_OUT
    held = _conn(session).scalar(
        select(_holds.c.id).where(_holds.c.transfer_id == transfer_id).limit(1)
    )
    if held or _entry_for_any_kind(session, transfer_id):
        return False
    # An internal transfer posted meanwhile closed it first: then this is no.
    return close_once(session, transfer_id, TIMED_OUT, now) in (None, TIMED_OUT)


def _entry_for_any_kind(session: Session, transfer_id: str) -> str | None:
    return _conn(session).scalar(
        select(_entries.c.id).where(_entries.c.transfer_id == transfer_id).limit(1)
    )


def _entry_for(session: Session, transfer_id: str, kind: str) -> str | None:
    return _conn(session).scalar(
        select(_entries.c.id).where(_entries.c.transfer_id == transfer_id, _entries.c.kind == kind)
    )


# -- postings ----------------------------------------------------------------------------


def _post(
    session: Session,
    transfer_id: str,
    kind: str,
    description: str,
    lines: list[PostingLine],
    now: datetime,
    *,
    released: dict[str, int] | None = None,
) -> str:
    """One journal entry and the balances it moves (deposits and payouts;
    an internal transfer is posted by post_transfer).

    `released` is what each account's hold gives back as the entry captures
    it (its `held` goes down by that much). Balances are updated in account
    order, so entries never wait on each other in a cycle.
    """
    check_balanced(lines)
    entry_id = str(uuid.uuid4())
    conn = _conn(session)
    conn.execute(
        _entries.insert(),
        {
            "id": entry_id,
            "transfer_id": transfer_id,
            "kind": kind,
            "description": description,
            "created_at": now,
        },
    )
    lines = sorted(lines, key=lambda line: line.account_id)
    account = _balances.c.account_id
    released = released or {}
    after = {
        line.account_id: conn.execute(
            update(_balances)
            .where(account == line.account_id)
            .values(
                balance=_balances.c.balance + line.amount,
                held=_balances.c.held - released.get(line.account_id, 0),
                updated_at=now,
            )
            .returning(_balances.c.balance)
        ).scalar_one()
        for line in lines
    }
    conn.execute(
        _postings.insert(),
        [
            {
                "entry_id": entry_id,
                "account_id": line.account_id,
                "amount": line.amount,
                "currency": line.currency,
                "balance_after": after[line.account_id],
                "created_at": now,
            }
            for line in lines
        ],
    )
    return entry_id


# An internal transfer's two balance rows, locked in account order.
_LOCK_PAIR = (
    select(
        _accounts.c.id,
        _accounts.c.kind,
        _accounts.c.status,
        _accounts.c.currency,
        _balances.c.balance,
        _balances.c.held,
    )
    .join(_balances, _balances.c.account_id == _accounts.c.id)
    .where(_accounts.c.id.in_([bindparam("from_account_id"), bindparam("to_account_id")]))
    .order_by(_accounts.c.id)
    .with_for_update(of=_balances)
)
_FIRST, _SECOND = bindparam("first_account"), bindparam("second_account")
# Both balances of an internal transfer, in one statement.
_MOVE_PAIR = (
    update(_balances)
    .where(_balances.c.account_id.in_([_FIRST, _SECOND]))
    .values(
        balance=_balances.c.balance
        + case(
            (_balances.c.account_id == _FIRST, bindparam("first_amount")),
            else_=bindparam("second_amount"),
        ),
        updated_at=bindparam("now"),
    )
)
_RECORD_ENTRY = _entries.insert().inline()


def post_transfer(
    session: Session,
    transfer_id: str,
    from_account_id: str,
    to_account_id: str,
    amount: int,
    currency: str,
    reference: str | None,
    now: datetime,
) -> Posted | Refused | None:
    """An internal transfer: debit and credit in one entry, if the sender can pay.

    Both accounts live here, so no hold is needed: the balance rows are
    locked in account order, the sender's available balance is judged on
    what is locked, and both postings are written before the locks go.
    What it writes needs no answer from the database (the new balances
    follow from the locked ones), so it goes out with the commit.
    Returns Posted or Refused, the same answer again for a transfer closed
    by an earlier call, or None for one that expired before it was posted.
    """
    previous = close_once(session, transfer_id, POSTED, now)
    if previous is not None:
        return _outcome_again(session, transfer_id, previous)
    rows = {
        row.id: row
        for row in query(
            session,
            _LOCK_PAIR,
            {"from_account_id": from_account_id, "to_account_id": to_account_id},
        )
    }
    sender, receiver = rows.get(from_account_id), rows.get(to_account_id)
    usable = _usable(sender, currency) and _usable(receiver, currency)
    # transactions refuses a transfer to its own account; the ledger never posts one.
    if not usable or from_account_id == to_account_id:
        return _refuse(session, transfer_id, contracts.REASON_ACCOUNT_UNAVAILABLE)
    if sender.balance - sender.held < amount:
        return _refuse(session, transfer_id, contracts.REASON_INSUFFICIENT_FUNDS)
    lines = [
        PostingLine(from_account_id, -amount, currency),
        PostingLine(to_account_id, amount, currency),
    ]
    check_balanced(lines)
    entry_id = str(uuid.uuid4())
    defer(
        session,
        _RECORD_ENTRY,
        {
            "id": entry_id,
            "transfer_id": transfer_id,
            "kind": contracts.KIND_INTERNAL,
            "description": reference or "Transfer",
            "created_at": now,
        },
    )
    first, second = sorted(lines, key=lambda line: line.account_id)
    defer(
        session,
        _MOVE_PAIR,
        {
            "first_account": first.account_id,
            "first_amount": first.amount,
            "second_account": second.account_id,
            "second_amount": second.amount,
            "now": now,
        },
    )
    defer_rows(
        session,
        _postings,
        [
            {
                "entry_id": entry_id,
                "account_id": line.account_id,
                "amount": line.amount,
                "currency": line.currency,
                "balance_after": rows[line.account_id].balance + line.amount,
                "created_at": now,
            }
            for line in (first, second)
        ],
    )
    return Posted(entry_id)


def _usable(row, currency: str) -> bool:
    return (
        row is not None
        and row.kind == AccountKind.CUSTOMER
        and row.status == AccountStatus.ACTIVE
        and row.currency == currency
    )


_REFUSE = (
    update(_closed)
    .where(_closed.c.transfer_id == bindparam("closed_transfer"))
    .values(outcome=bindparam("refusal"))
)


def _refuse(session: Session, transfer_id: str, reason: str) -> Refused:
    defer(session, _REFUSE, {"closed_transfer": transfer_id, "refusal": refused_outcome(reason)})
    return Refused(reason)


def _outcome_again(session: Session, transfer_id: str, outcome: str) -> Posted | Refused | None:
    """A transfer closed before: its answer, for a repeated request."""
    if outcome == POSTED:
        return Posted(_entry_for(session, transfer_id, contracts.KIND_INTERNAL))
    if outcome.startswith(f"{REFUSED}:"):
        return Refused(outcome.split(":", 1)[1])
    return None  # expired (or ended) before it was posted: nothing moves


def credit_deposit(
    session: Session, transfer_id: str, account_id: str, amount: int, currency: str, now: datetime
) -> str | Refused:
    """Money the provider collected from a card lands on the customer's account."""
    existing = _entry_for(session, transfer_id, contracts.KIND_DEPOSIT)
    if existing:
        return existing
    if not _usable(_account(session, account_id), currency):
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


def _account(session: Session, account_id: str):
    return (
        _conn(session)
        .execute(
            select(
                _accounts.c.id, _accounts.c.kind, _accounts.c.status, _accounts.c.currency
            ).where(_accounts.c.id == account_id)
        )
        .first()
    )


# -- holds (payouts) ----------------------------------------------------------------------


def place_hold(
    session: Session, transfer_id: str, account_id: str, amount: int, currency: str, now: datetime
) -> Reserved | Refused:
    existing = (
        _conn(session)
        .execute(
            select(_holds.c.id, _holds.c.status, _holds.c.amount, _holds.c.currency).where(
                _holds.c.transfer_id == transfer_id, _holds.c.account_id == account_id
            )
        )
        .first()
    )
    if existing is not None:
        if existing.status == HoldStatus.RELEASED:
            return Refused(contracts.REASON_TIMED_OUT)
        return Reserved(existing.id, account_id, existing.amount, existing.currency)
    if not _usable(_account(session, account_id), currency):
        return Refused(contracts.REASON_ACCOUNT_UNAVAILABLE)
    reserved = (
        _conn(session)
        .execute(
            update(_balances)
            .where(
                _balances.c.account_id == account_id,
                _balances.c.balance - _balances.c.held >= amount,
            )
            .values(held=_balances.c.held + amount, updated_at=now)
        )
        .rowcount
    )
    if not reserved:
        return Refused(contracts.REASON_INSUFFICIENT_FUNDS)
    hold_id = str(uuid.uuid4())
    _conn(session).execute(
        _holds.insert(),
        {
            "id": hold_id,
            "account_id": account_id,
            "transfer_id": transfer_id,
            "amount": amount,
            "currency": currency,
            "status": HoldStatus.ACTIVE,
            "created_at": now,
        },
    )
    return Reserved(hold_id, account_id, amount, currency)


def _settle_hold(session: Session, transfer_id: str, status: str, now: datetime):
    """The transfer's active hold, marked captured or released (None if none is active)."""
    return (
        _conn(session)
        .execute(
            update(_holds)
            .where(_holds.c.transfer_id == transfer_id, _holds.c.status == HoldStatus.ACTIVE)
            .values(status=status, settled_at=now)
            .returning(_holds.c.id, _holds.c.account_id, _holds.c.amount, _holds.c.currency)
        )
        .first()
    )


def release_hold(session: Session, transfer_id: str, now: datetime) -> Released | None:
    """Give reserved funds back; a no-op for a hold already captured or released."""
    hold = _settle_hold(session, transfer_id, HoldStatus.RELEASED, now)
    if hold is None:
        return None
    _conn(session).execute(
        update(_balances)
        .where(_balances.c.account_id == hold.account_id)
        .values(held=_balances.c.held - hold.amount, updated_at=now)
    )
    return Released(hold.id, hold.account_id, hold.amount)


def capture_payout(session: Session, transfer_id: str, now: datetime) -> str | Refused:
    """The provider paid the beneficiary: the held funds leave the account."""
    existing = _entry_for(session, transfer_id, contracts.KIND_PAYOUT)
    if existing:
        return existing
    captured = _settle_hold(session, transfer_id, HoldStatus.CAPTURED, now)
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
        released={captured.account_id: captured.amount},
    )

"""transactions' use cases."""

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.transactions import event_store, projections
from services.transactions.domain import (
    PENDING,
    TRANSFER_COMPLETED,
    TRANSFER_FAILED,
    Event,
    Transfer,
)
from services.transactions.models import AccountHistory, TransferRequest, TransferView
from shared import contracts, correlation
from shared.database import UnitOfWork
from shared.errors import Conflict, InvalidInput, NotFound
from shared.inbox import claim
from shared.outbox import record_event


def _request_hash(request: dict) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(session: Session, owner_id: str, key: str, request_hash: str) -> dict | None:
    """The first response for this Idempotency-Key, or None if the key is new."""
    previous = session.get(TransferRequest, (owner_id, key))
    if previous is None:
        return None
    if previous.request_hash != request_hash:
        raise Conflict(
            "idempotency_key_reused", "This Idempotency-Key was used with a different request."
        )
    return {"transfer_id": previous.transfer_id, "status": PENDING}


def create_transfer(
    uow: UnitOfWork,
    check_accounts: Callable[[], dict],
    owner_id: str,
    idempotency_key: str,
    request: dict,
    deadline_after: timedelta,
    now: datetime,
) -> dict:
    """Start a transfer once per (customer, Idempotency-Key).

    `request` holds kind, amount, currency, accounts, reference, source,
    beneficiary. `check_accounts` asks accounts whether the accounts may be
    used (raising NotFound / InvalidInput) and returns the receiving owner.
    """
    request_hash = _request_hash(request)
    with uow.transaction() as session:
        replay = _replayed(session, owner_id, idempotency_key, request_hash)
    if replay:
        return replay
    to_owner_id = check_accounts().get("to_owner_id")  # RPC outside any transaction
    transfer_id = str(uuid.uuid4())
    requested = Transfer.request(
        transfer_id,
        request["kind"],
        owner_id,
        to_owner_id,
        request["amount"],
        request["currency"],
        request.get("from_account_id"),
        request.get("to_account_id"),
        request.get("reference"),
        request.get("source"),
        request.get("beneficiary"),
        now + deadline_after,
        now,
    )
    try:
        with uow.transaction() as session:
            session.add(
                TransferRequest(
                    owner_id=owner_id,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    transfer_id=transfer_id,
                    created_at=now,
                )
            )
            session.flush()
            transfer = Transfer.replay([requested])
            appended = event_store.append(
                session, transfer_id, 0, [requested], correlation.current(), now
            )
            projections.project(session, transfer, appended[0].position)
            record_event(session, contracts.TRANSFER_REQUESTED, transfer.request_payload())
    except IntegrityError:
        # The same key arrived concurrently and the other request won.
        with uow.transaction() as session:
            replay = _replayed(session, owner_id, idempotency_key, request_hash)
        if replay:
            return replay
        raise
    return {"transfer_id": transfer_id, "status": PENDING}


def _apply(
    session: Session,
    transfer: Transfer,
    events: list[Event],
    now: datetime,
    causation_id: str | None,
) -> None:
    """Append `events`, update the projections, announce a terminal outcome."""
    if not events:
        return
    previous_version = transfer.version
    event_store.append(
        session, transfer.transfer_id, previous_version, events, correlation.current(), now
    )
    for event in events:
        transfer.apply(event)
    event_store.maybe_snapshot(session, transfer, previous_version, now)
    projections.project(session, transfer, None)
    ended = {event.type for event in events} & {TRANSFER_COMPLETED, TRANSFER_FAILED}
    if ended:
        outcome = (
            contracts.TRANSFER_COMPLETED
            if TRANSFER_COMPLETED in ended
            else contracts.TRANSFER_FAILED
        )
        record_event(
            session,
            outcome,
            {
                "transfer_id": transfer.transfer_id,
                "kind": transfer.kind,
                "status": transfer.status,
                "reason": transfer.failure_reason,
                "owner_id": transfer.owner_id,
                "to_owner_id": transfer.to_owner_id,
                "amount": transfer.amount,
                "currency": transfer.currency,
                "transfer": transfer.request_payload(),
            },
            causation_id=causation_id,
        )


def record_saga_step(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Fold a saga participant's event into the transfer's stream."""
    payload = envelope["payload"]
    with uow.transaction() as session:
        if not claim(session, envelope, "transactions.record_saga_step"):
            return
        transfer = event_store.load(session, payload["transfer_id"])
        if transfer is None:
            return  # not ours (or from another environment): nothing to fold into
        events = transfer.record_step(envelope["type"], payload, now)
        _apply(session, transfer, events, now, envelope["event_id"])


def expire_overdue(
    uow: UnitOfWork, may_expire: Callable[[str], bool], now: datetime, batch: int = 100
) -> int:
    """Fail pending transfers past their deadline, where that is safe.

    The aggregate rules out those a payment provider may be moving (see
    Transfer.can_time_out); for the rest, accounts decides (`may_expire`,
    an RPC): it expires a transfer only while nothing is reserved or posted
    for it, and from then on refuses to reserve or post it. A transfer whose
    money already moved is left to its own events, however late they are.
    """
    with uow.transaction() as session:
        candidates = session.scalars(
            select(TransferView.transfer_id)
            .where(
                TransferView.status == PENDING,
                TransferView.deadline.is_not(None),
                TransferView.deadline < now,
            )
            .order_by(TransferView.deadline)
            .limit(batch)
        ).all()
    expired = 0
    for transfer_id in candidates:
        with uow.transaction() as session:
            transfer = event_store.load(session, transfer_id)
        if not transfer.can_time_out(now) or not may_expire(transfer_id):
            continue  # outside any transaction: may_expire is an RPC
        # accounts has closed it: that answer is binding, even if a step
        # folded meanwhile moved the deadline (a review) or raced this append.
        for _ in range(5):
            try:
                with uow.transaction() as session:
                    transfer = event_store.load(session, transfer_id)
                    events = transfer.expired_by_accounts(now)
                    _apply(session, transfer, events, now, None)
                    expired += bool(events)
                break
            except event_store.ConcurrencyError:
                continue  # a saga step appended first; fold on top of it
    return expired


def _view(row: TransferView) -> dict:
    return {
        "transfer_id": row.transfer_id,
        "kind": row.kind,
        "status": row.status,
        "failure_reason": row.failure_reason,
        "amount": row.amount,
        "currency": row.currency,
        "from_account_id": row.from_account_id,
        "to_account_id": row.to_account_id,
        "reference": row.reference,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "steps": json.loads(row.steps),
    }


def get_transfer(uow: UnitOfWork, caller_id: str, transfer_id: str) -> dict:
    with uow.transaction() as session:
        row = session.get(TransferView, transfer_id)
        if row is None or caller_id not in (row.owner_id, row.to_owner_id):
            raise NotFound("transfer_not_found", "No such transfer.")
        return _view(row)


def list_transfers(
    uow: UnitOfWork,
    caller_id: str,
    account_id: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> dict:
    """The caller's transfers (either side), newest first, keyset-paginated."""
    before = _decode_cursor(cursor)
    query = select(TransferView).where(
        or_(TransferView.owner_id == caller_id, TransferView.to_owner_id == caller_id)
    )
    if account_id:
        query = query.where(
            TransferView.transfer_id.in_(
                select(AccountHistory.transfer_id).where(AccountHistory.account_id == account_id)
            )
        )
    if status:
        query = query.where(TransferView.status == status)
    if before is not None:
        query = query.where(TransferView.position < before)
    query = query.order_by(TransferView.position.desc()).limit(limit + 1)
    with uow.transaction() as session:
        rows = session.scalars(query).all()
        page = rows[:limit]
        return {
            "items": [_view(row) for row in page],
            "next_cursor": str(page[-1].position) if len(rows) > limit else None,
        }


# A posting or event position: at most 18 digits fits any 64-bit integer column.
_CURSOR = re.compile(r"^[0-9]{1,18}$")


def _decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    if not _CURSOR.match(cursor):
        raise InvalidInput(
            "invalid_cursor",
            "The cursor is not valid.",
            {"cursor": ["Not a cursor returned by this endpoint."]},
        )
    return int(cursor)


def rebuild_projections(uow: UnitOfWork) -> int:
    with uow.transaction() as session:
        return projections.rebuild(session)

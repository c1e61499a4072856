"""transactions' use cases: accept transfers, answer queries, expire the overdue."""

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, union_all
from sqlalchemy.orm import Session

from services.transactions import event_store, metrics, projections, rebuild
from services.transactions.directory import AccountDirectory
from services.transactions.domain import PENDING, Event, Recorded, Transfer
from services.transactions.models import AccountHistory, TransferRequest, TransferView
from shared import contracts, correlation, transfer_checks
from shared.database import (
    UnitOfWork,
    after_commit,
    claim_once,
    claims_deferred,
    connection_of,
)
from shared.errors import Conflict, NotFound
from shared.outbox import stage
from shared.schemas import position_cursor

_requests = TransferRequest.__table__
_view = TransferView.__table__
_history = AccountHistory.__table__
ENDINGS = {Recorded.COMPLETED, Recorded.FAILED}
_FIRST_REQUEST = select(_requests.c.request_hash, _requests.c.transfer_id).where(
    _requests.c.owner_id == bindparam("owner"), _requests.c.idempotency_key == bindparam("key")
)


def _request_hash(request: dict) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(session: Session, owner_id: str, key: str, request_hash: str) -> dict | None:
    """The first response for this Idempotency-Key, or None if the key is new."""
    previous = (
        connection_of(session).execute(_FIRST_REQUEST, {"owner": owner_id, "key": key}).first()
    )
    if previous is None:
        return None
    if previous.request_hash != request_hash:
        raise Conflict(
            "idempotency_key_reused", "This Idempotency-Key was used with a different request."
        )
    return {"transfer_id": previous.transfer_id, "status": PENDING}


def _claim_key(session: Session, owner_id: str, key: str, request_hash: str, transfer_id, now):
    """Record the key for a new transfer; the first response again if it was taken."""
    new = claim_once(
        session,
        _requests,
        {
            "owner_id": owner_id,
            "idempotency_key": key,
            "request_hash": request_hash,
            "transfer_id": transfer_id,
            "created_at": now,
        },
    )
    return None if new else _replayed(session, owner_id, key, request_hash)


@claims_deferred
def create_transfer(
    uow: UnitOfWork,
    directory: AccountDirectory,
    ask_accounts: Callable[[], dict],
    owner_id: str,
    idempotency_key: str,
    request: dict,
    deadline_after: timedelta,
    now: datetime,
    notify: str | None = None,
) -> dict:
    """Start a transfer once per (customer, Idempotency-Key).

    `request` holds kind, amount, currency, accounts, reference, source,
    beneficiary. The accounts are checked (shared.transfer_checks) against
    what the directory knows of them; accounts it does not know, and every
    deposit (whose card is charged before the ledger sees the money), are
    checked by accounts itself (`ask_accounts`, an RPC), outside any
    transaction. A repeated key answers the first response (or 409) before
    anything is checked. `notify` is the routing key its outcome is also
    published to (the waiting gateway process's; kept with the request).
    """
    request_hash = _request_hash(request)
    kind, currency = request["kind"], request["currency"]
    from_id, to_id = request.get("from_account_id"), request.get("to_account_id")
    known = None if kind == contracts.KIND_DEPOSIT else directory.known(from_id, to_id)
    to_owner_id = None
    if known is None:
        with uow.commit_on_exit() as session:
            replay = _replayed(session, owner_id, idempotency_key, request_hash)
        if replay:
            return replay
        answer = ask_accounts()
        directory.learn(answer.get("accounts", ()))
        to_owner_id = answer.get("to_owner_id")
    transfer_id = str(uuid.uuid4())
    with uow.commit_on_exit() as session:
        replay = _claim_key(session, owner_id, idempotency_key, request_hash, transfer_id, now)
        if replay:
            return replay
        if known is not None:
            # Raising rolls the key back with everything else: nothing recorded.
            to_owner_id = transfer_checks.check_transfer(
                owner_id,
                kind,
                currency,
                known.get(from_id),
                known.get(to_id),
                from_account_id=from_id,
                to_account_id=to_id,
            )
        requested = Transfer.request(
            transfer_id,
            kind,
            owner_id,
            to_owner_id,
            request["amount"],
            currency,
            from_id,
            to_id,
            request.get("reference"),
            request.get("source"),
            request.get("beneficiary"),
            now + deadline_after,
            now,
            notify,
        )
        transfer = Transfer.replay([requested])
        event_store.start(session, transfer, [requested], correlation.current(), now)
        projections.add(session, transfer)
        stage(session, transfer.requested())
    return {"transfer_id": transfer_id, "status": PENDING}


def fold_step(session: Session, envelope: dict, now: datetime) -> Transfer | None:
    """Fold a saga participant's event into its transfer's stream, in the
    caller's transaction; announce the end if this step ends it."""
    payload = envelope["payload"]

    def decide(transfer: Transfer) -> list[Event]:
        return transfer.record_step(envelope["type"], payload, now, payload.get("prior_step"))

    return _fold(session, payload["transfer_id"], decide, now, envelope["event_id"])


def _fold(session: Session, transfer_id: str, decide, now: datetime, causation_id) -> Transfer:
    transfer, events = event_store.fold(session, transfer_id, decide, correlation.current(), now)
    if transfer is None:
        return None  # not ours (or from another environment): nothing to fold into
    if events:
        projections.update_view(session, transfer)
    if any(event.type in ENDINGS for event in events):
        also_to = (transfer.notify,) if transfer.notify else ()
        stage(session, transfer.outcome(), causation_id=causation_id, also_to=also_to)
        after_commit(session, lambda: metrics.transfer_ended(transfer, now))
    return transfer


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
    with uow.commit_on_exit() as session:
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
        with uow.commit_on_exit() as session:
            transfer = event_store.load(session, transfer_id)
        if not transfer.can_time_out(now) or not may_expire(transfer_id):
            continue  # outside any transaction: may_expire is an RPC
        # accounts has closed it: that answer is binding, even if a step
        # folded meanwhile moved the deadline (a review).
        with uow.commit_on_exit() as session:
            transfer = _fold(session, transfer_id, lambda t: t.expired_by_accounts(now), now, None)
        expired += transfer.failure_reason == contracts.REASON_TIMED_OUT
    return expired


def _view_of(row) -> dict:
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


_VIEW_COLUMNS = (
    _view.c.transfer_id,
    _view.c.kind,
    _view.c.status,
    _view.c.failure_reason,
    _view.c.amount,
    _view.c.currency,
    _view.c.from_account_id,
    _view.c.to_account_id,
    _view.c.reference,
    _view.c.created_at,
    _view.c.updated_at,
    _view.c.steps,
    _view.c.position,
)


def get_transfer(uow: UnitOfWork, caller_id: str, transfer_id: str) -> dict:
    with uow.read() as connection:
        row = connection.execute(
            select(*_VIEW_COLUMNS, _view.c.owner_id, _view.c.to_owner_id).where(
                _view.c.transfer_id == transfer_id
            )
        ).first()
    if row is None or caller_id not in (row.owner_id, row.to_owner_id):
        raise NotFound("transfer_not_found", "No such transfer.")
    return _view_of(row)


def list_transfers(
    uow: UnitOfWork,
    caller_id: str,
    account_id: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> dict:
    """The caller's transfers (either side), newest first, keyset-paginated.

    Each side is read from its own (party, position) index and the two are
    merged, so a page costs the same however many transfers the customer
    has; an account's are read from its history in the same way.
    """
    before = position_cursor(cursor)

    def page_of(query, position):
        """Newest first by `position`, the second column of the party's index."""
        if status:
            query = query.where(_view.c.status == status)
        if before is not None:
            query = query.where(position < before)
        return query.order_by(position.desc()).limit(limit + 1)

    if account_id:
        query = page_of(
            select(*_VIEW_COLUMNS)
            .join(_history, _history.c.transfer_id == _view.c.transfer_id)
            .where(
                _history.c.account_id == account_id,
                (_view.c.owner_id == caller_id) | (_view.c.to_owner_id == caller_id),
            ),
            _history.c.position,
        )
    else:
        sent = page_of(
            select(*_VIEW_COLUMNS).where(_view.c.owner_id == caller_id), _view.c.position
        )
        received = page_of(
            # Written as the received index's condition, so that it is used.
            select(*_VIEW_COLUMNS).where(
                _view.c.to_owner_id == caller_id, _view.c.to_owner_id != _view.c.owner_id
            ),
            _view.c.position,
        )
        both = union_all(sent.subquery().select(), received.subquery().select()).subquery()
        query = select(both).order_by(both.c.position.desc()).limit(limit + 1)
    with uow.read() as connection:
        rows = connection.execute(query).all()
    page = rows[:limit]
    return {
        "items": [_view_of(row) for row in page],
        "next_cursor": str(page[-1].position) if len(rows) > limit else None,
    }


def rebuild_projections(uow: UnitOfWork) -> int:
    return rebuild.rebuild(uow)

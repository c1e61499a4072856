"""Read models built from the transfer events: status and per-account history.

Live, they are updated in the same transaction as the events they reflect
(one statement each). `rebuild` drops them and replays the store from
position zero; a test checks that the result equals the live tables.
"""

import json
from datetime import datetime

from sqlalchemy import bindparam, delete, update
from sqlalchemy.orm import Session

from services.transactions import event_store
from services.transactions.domain import Event, Transfer
from services.transactions.models import AccountHistory, TransferView
from shared.database import defer

_view = TransferView.__table__
_history = AccountHistory.__table__


def _deadline(transfer: Transfer) -> datetime | None:
    return datetime.fromisoformat(transfer.deadline) if transfer.deadline else None


def _view_row(transfer: Transfer, position: int) -> dict:
    return {
        "transfer_id": transfer.transfer_id,
        "kind": transfer.kind,
        "status": transfer.status,
        "failure_reason": transfer.failure_reason,
        "owner_id": transfer.owner_id,
        "to_owner_id": transfer.to_owner_id,
        "amount": transfer.amount,
        "currency": transfer.currency,
        "from_account_id": transfer.from_account_id,
        "to_account_id": transfer.to_account_id,
        "reference": transfer.reference,
        "steps": json.dumps(transfer.steps),
        "deadline": _deadline(transfer),
        "created_at": transfer.created_at,
        "updated_at": transfer.updated_at,
        "version": transfer.version,
        "position": position,
    }


def _history_rows(transfer: Transfer, position: int) -> list[dict]:
    return [
        {
            "account_id": account_id,
            "transfer_id": transfer.transfer_id,
            "direction": direction,
            "position": position,
        }
        for account_id, direction in (
            (transfer.from_account_id, "out"),
            (transfer.to_account_id, "in"),
        )
        if account_id is not None
    ]


_ADD_VIEW = _view.insert().inline()
_ADD_HISTORY = _history.insert().inline()
_UPDATE_VIEW = (
    update(_view)
    .where(_view.c.transfer_id == bindparam("transfer"))
    .values(
        status=bindparam("status"),
        failure_reason=bindparam("failure_reason"),
        steps=bindparam("steps"),
        deadline=bindparam("deadline"),
        updated_at=bindparam("updated_at"),
        version=bindparam("version"),
    )
)


def add(session: Session, transfer: Transfer, position: int) -> None:
    """A new transfer: its view, listed at `position`, and its accounts' history
    (written with the commit)."""
    defer(session, _ADD_VIEW, _view_row(transfer, position))
    for row in _history_rows(transfer, position):
        defer(session, _ADD_HISTORY, row)


def update_view(session: Session, transfer: Transfer) -> None:
    """What a step changes: status, reason, steps, deadline, times (written
    with the commit)."""
    defer(
        session,
        _UPDATE_VIEW,
        {
            "transfer": transfer.transfer_id,
            "status": transfer.status,
            "failure_reason": transfer.failure_reason,
            "steps": json.dumps(transfer.steps),
            "deadline": _deadline(transfer),
            "updated_at": transfer.updated_at,
            "version": transfer.version,
        },
    )


def rebuild(session: Session, batch: int = 2000) -> int:
    """Replay every event from position zero into fresh projections.

    Events are read in global order in large batches and folded in memory;
    the rows are then written in bulk. Returns how many events were
    replayed.
    """
    conn = session.connection()
    conn.execute(delete(_history))
    conn.execute(delete(_view))
    transfers: dict[str, Transfer] = {}
    first_positions: dict[str, int] = {}
    count = 0
    for position, stream_id, event_type, data in event_store.read_all(session):
        transfer = transfers.get(stream_id)
        if transfer is None:
            transfer = transfers[stream_id] = Transfer()
            first_positions[stream_id] = position
        transfer.apply(Event(event_type, json.loads(data)))
        count += 1
    views, histories = [], []
    for stream_id, transfer in transfers.items():
        views.append(_view_row(transfer, first_positions[stream_id]))
        histories.extend(_history_rows(transfer, first_positions[stream_id]))
        if len(views) >= batch:
            conn.execute(_view.insert(), views)
            views = []
        if len(histories) >= batch:
            conn.execute(_history.insert(), histories)
            histories = []
    if views:
        conn.execute(_view.insert(), views)
    if histories:
        conn.execute(_history.insert(), histories)
    return count

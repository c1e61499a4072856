"""Read models built from the transfer events: status and per-account history.

Live, they are updated in the same transaction as the events they reflect
(one statement each). services/transactions/rebuild.py builds them anew
from the event store and swaps them in; a test checks that the result
equals the live tables.
"""

import json
from datetime import datetime

from sqlalchemy import Table, bindparam, literal, select, union_all, update
from sqlalchemy.orm import Session

from services.transactions.domain import Transfer
from services.transactions.event_store import FIRST_POSITION
from services.transactions.models import AccountHistory, TransferView
from shared.database import defer

_view = TransferView.__table__
_history = AccountHistory.__table__


def _deadline(transfer: Transfer) -> datetime | None:
    return datetime.fromisoformat(transfer.deadline) if transfer.deadline else None


def view_row(transfer: Transfer, position: int) -> dict:
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


def history_rows(transfer: Transfer, position: int) -> list[dict]:
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


def history_from_views(
    views: Table, history: Table, transfer_ids: list[str] | None = None, *, of=None
):
    """INSERT ... SELECT of `history_rows` for every row of `views` (or those
    named, or the one `of` binds): the same rule as history_rows, in SQL, for
    a rebuild's bulk and a new transfer; the rebuild tests hold the two equal."""
    sides = []
    for account, direction in ((views.c.from_account_id, "out"), (views.c.to_account_id, "in")):
        side = select(account, views.c.transfer_id, literal(direction), views.c.position).where(
            account.is_not(None)
        )
        if transfer_ids is not None:
            side = side.where(views.c.transfer_id.in_(transfer_ids))
        if of is not None:
            side = side.where(views.c.transfer_id == of)
        sides.append(side)
    return history.insert().from_select(
        ["account_id", "transfer_id", "direction", "position"], union_all(*sides)
    )


# A new transfer's view, listed at its stream's first event, and its
# accounts' history from that view: written with the commit, after the
# events (event_store.start), with no answer needed from the database.
_ADD_NEW_VIEW = _view.insert().values(position=FIRST_POSITION).inline()
_ADD_NEW_HISTORY = history_from_views(_view, _history, of=bindparam("listed"))


def add(session: Session, transfer: Transfer) -> None:
    """A new transfer: its view and its accounts' history (with the commit,
    after its stream's first events)."""
    view = view_row(transfer, None)
    del view["position"]
    defer(session, _ADD_NEW_VIEW, {**view, "first_of_stream": transfer.transfer_id})
    defer(session, _ADD_NEW_HISTORY, {"listed": transfer.transfer_id})


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

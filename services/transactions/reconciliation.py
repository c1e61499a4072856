"""What transactions tells the reconciler (accounts) about transfers' outcomes.

Read-only. The reconciler walks ended transfers in the order they ended
(the position of their TransferCompleted / TransferFailed event), from the
last position it checked, so each run reads only what is new. An event
recorded less than `settled_before` ago is left for the next run: positions
are handed out at insert, and a transaction still open could commit a lower
one after a higher one was read.
"""

from datetime import datetime

from sqlalchemy import bindparam, select

from services.transactions import domain
from services.transactions.models import StoredEvent, TransferView
from shared.database import UnitOfWork

_events = StoredEvent.__table__
_views = TransferView.__table__

_COLUMNS = (
    _views.c.transfer_id,
    _views.c.kind,
    _views.c.status,
    _views.c.failure_reason,
    _views.c.amount,
    _views.c.currency,
    _views.c.from_account_id,
    _views.c.to_account_id,
    _views.c.deadline,
)

_ENDED = (
    select(_events.c.position, *_COLUMNS)
    .join(_views, _views.c.transfer_id == _events.c.stream_id)
    .where(
        _events.c.position > bindparam("after"),
        _events.c.event_type.in_((domain.Recorded.COMPLETED, domain.Recorded.FAILED)),
        _events.c.recorded_at < bindparam("settled_before"),
    )
    .order_by(_events.c.position)
    .limit(bindparam("limit"))
)

# A full pass walks every ended transfer in id order (the primary key), so
# accounts and payments can answer for the same id range with a range scan.
_ENDED_BY_ID = (
    select(*_COLUMNS)
    .where(
        _views.c.status.in_((domain.COMPLETED, domain.FAILED)),
        _views.c.transfer_id > bindparam("after"),
    )
    .order_by(_views.c.transfer_id)
    .limit(bindparam("limit"))
)

_STATES = select(*_COLUMNS).where(_views.c.transfer_id.in_(bindparam("ids", expanding=True)))

_STUCK = (
    select(*_COLUMNS)
    .where(_views.c.status == domain.PENDING, _views.c.deadline < bindparam("before"))
    .order_by(_views.c.deadline)
    .limit(bindparam("limit"))
)


def _view(row) -> dict:
    view = {column.key: getattr(row, column.key) for column in _COLUMNS}
    view["deadline"] = row.deadline.isoformat() if row.deadline else None
    return view


def ended_transfers(uow: UnitOfWork, after: int, limit: int, settled_before: datetime) -> dict:
    """Transfers that ended after position `after`, oldest first, and where to go on from."""
    with uow.read() as connection:
        rows = connection.execute(
            _ENDED, {"after": after, "limit": limit, "settled_before": settled_before}
        ).all()
    return {
        "transfers": [{**_view(row), "position": row.position} for row in rows],
        "next_after": rows[-1].position if rows else after,
        "more": len(rows) == limit,
    }


def ended_transfers_by_id(uow: UnitOfWork, after: str, limit: int) -> dict:
    """Every ended transfer with an id above `after`, in id order (a full pass)."""
    with uow.read() as connection:
        rows = connection.execute(_ENDED_BY_ID, {"after": after, "limit": limit}).all()
    return {"transfers": [_view(row) for row in rows], "more": len(rows) == limit}


def transfer_states(uow: UnitOfWork, transfer_ids: list[str]) -> dict:
    """The current state of each transfer asked about that transactions knows."""
    if not transfer_ids:
        return {}
    with uow.read() as connection:
        rows = connection.execute(_STATES, {"ids": transfer_ids}).all()
    return {row.transfer_id: _view(row) for row in rows}


def stuck_transfers(uow: UnitOfWork, before: datetime, limit: int) -> list[dict]:
    """Transfers still pending with a deadline before `before`, oldest deadline first."""
    with uow.read() as connection:
        rows = connection.execute(_STUCK, {"before": before, "limit": limit}).all()
    return [_view(row) for row in rows]

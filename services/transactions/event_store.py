"""Append-only event store with optimistic concurrency, and a snapshot at each stream's head.

`events` is the record: (stream_id, version) is unique and `position`
orders every event of every stream. `snapshots` keeps each stream's state
as of its latest event, written in the same transaction as every append,
so loading an aggregate is one indexed read; `load(..., for_update=True)`
also locks that row, so two steps of one transfer are folded one after
the other, never concurrently. The same read returns the stream's last
version: a snapshot written before they were kept at the head, which lags
its stream, is brought up to date from the events after it.

`fold` holds the stream's lock from load to commit, so what it appends
cannot conflict: its writes (events, snapshot) are deferred and travel
with the commit. `append` is the general optimistic append: it checks at
once that nobody wrote past the expected version (ConcurrencyError).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from services.transactions.domain import Event, Transfer
from services.transactions.models import Snapshot, StoredEvent
from shared.database import (
    connection_of,
    defer,
    defer_rows,
    insert_ignoring,
    insert_ignoring_duplicates,
    query,
)

_events = StoredEvent.__table__
_snapshots = Snapshot.__table__

# The position of a stream's first event, read where it is written (in the
# same transaction): what a new transfer's projections are listed at.
FIRST_POSITION = (
    select(_events.c.position)
    .where(_events.c.stream_id == bindparam("first_of_stream"), _events.c.version == 1)
    .scalar_subquery()
)
_RECORD_SNAPSHOT = _snapshots.insert().inline()
_SAVE_SNAPSHOT = (
    update(_snapshots)
    .where(_snapshots.c.stream_id == bindparam("stream"))
    .values(version=bindparam("version"), state=bindparam("state"), taken_at=bindparam("taken_at"))
)
_HEAD = (
    select(func.max(_events.c.version))
    .where(_events.c.stream_id == bindparam("stream_id"))
    .scalar_subquery()
)
_LOAD = select(_snapshots.c.state, _snapshots.c.version, _HEAD.label("head")).where(
    _snapshots.c.stream_id == bindparam("stream_id")
)
_LOAD_LOCKED = _LOAD.with_for_update(of=_snapshots)
_AFTER = (
    select(_events.c.event_type, _events.c.data)
    .where(_events.c.stream_id == bindparam("stream_id"), _events.c.version > bindparam("after"))
    .order_by(_events.c.version)
)


class ConcurrencyError(Exception):
    """Someone appended to the stream since it was loaded: reload and retry."""

    def __init__(self, stream_id: str, expected_version: int):
        super().__init__(f"stream {stream_id} is past version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


@dataclass(frozen=True)
class Appended:
    position: int
    version: int


def _rows(stream_id, expected_version, events, correlation_id, now) -> list[dict]:
    return [
        {
            "stream_id": stream_id,
            "version": expected_version + i + 1,
            "event_type": event.type,
            "data": json.dumps(event.data),
            "correlation_id": correlation_id,
            "recorded_at": now,
        }
        for i, event in enumerate(events)
    ]


def start(
    session: Session, transfer: Transfer, events: list[Event], correlation_id, now: datetime
) -> None:
    """Write a new stream's first events and its snapshot (with the commit:
    nothing here needs an answer; FIRST_POSITION reads where they went)."""
    defer_rows(session, _events, _rows(transfer.transfer_id, 0, events, correlation_id, now))
    defer(
        session, _RECORD_SNAPSHOT, {"stream_id": transfer.transfer_id, **_snapshot(transfer, now)}
    )


def append(
    session: Session,
    stream_id: str,
    expected_version: int,
    events: list[Event],
    correlation_id: str | None,
    now: datetime,
) -> None:
    """Add events after `expected_version`; ConcurrencyError if that is not the last one."""
    rows = _rows(stream_id, expected_version, events, correlation_id, now)
    statement = insert_ignoring(session, _events).values(rows)
    if connection_of(session).execute(statement).rowcount != len(rows):
        raise ConcurrencyError(stream_id, expected_version)


def _snapshot(transfer: Transfer, now: datetime) -> dict:
    return {"version": transfer.version, "state": json.dumps(transfer.snapshot()), "taken_at": now}


def _save_snapshot(session: Session, transfer: Transfer, now: datetime) -> None:
    defer(session, _SAVE_SNAPSHOT, {"stream": transfer.transfer_id, **_snapshot(transfer, now)})


def load(session: Session, stream_id: str, *, for_update: bool = False) -> Transfer | None:
    """The aggregate at its stream's head; with `for_update`, locked until commit.

    One read: the snapshot and the stream's last version. A snapshot that
    lags its stream (written before they were kept at the head) is brought
    up to date from the events after it; a stream without one is replayed
    and given one, so that it can be locked.
    """
    found = query(session, _LOAD_LOCKED if for_update else _LOAD, {"stream_id": stream_id}).first()
    if found is not None:
        transfer = Transfer(**json.loads(found.state))
        if (found.head or 0) > found.version:
            transfer = _replay_after(session, stream_id, transfer)
        return transfer
    transfer = _replay_after(session, stream_id, None)
    if transfer is None or not for_update:
        return transfer
    insert_ignoring_duplicates(
        session,
        _snapshots,
        {
            "stream_id": stream_id,
            "version": transfer.version,
            "state": json.dumps(transfer.snapshot()),
            "taken_at": datetime.now(UTC),
        },
    )
    return load(session, stream_id, for_update=True)


def _replay_after(session: Session, stream_id: str, base: Transfer | None) -> Transfer | None:
    """`base` (or an empty transfer) with the stream's events after its version applied."""
    after = base.version if base else 0
    rows = connection_of(session).execute(_AFTER, {"stream_id": stream_id, "after": after})
    events = [Event(row.event_type, json.loads(row.data)) for row in rows]
    if base is None and not events:
        return None
    transfer = base or Transfer()
    for event in events:
        transfer.apply(event)
    return transfer


def fold(
    session: Session,
    stream_id: str,
    decide: Callable[[Transfer], list[Event]],
    correlation_id: str | None,
    now: datetime,
) -> tuple[Transfer | None, list[Event]]:
    """Load the aggregate locked, append what `decide` makes of it, keep the snapshot.

    Returns the transfer after the new events, and those events (None and
    [] if there is no such stream). The lock is held until commit, so the
    new versions are free: they are written with the commit.
    """
    transfer = load(session, stream_id, for_update=True)
    if transfer is None:
        return None, []
    events = decide(transfer)
    if not events:
        return transfer, []
    defer_rows(session, _events, _rows(stream_id, transfer.version, events, correlation_id, now))
    for event in events:
        transfer.apply(event)
    _save_snapshot(session, transfer, now)
    return transfer, events

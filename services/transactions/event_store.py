"""Append-only event store with optimistic concurrency and snapshots."""

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.transactions.domain import Event, Transfer
from services.transactions.models import Snapshot, StoredEvent

# Take a snapshot every this many events of a stream.
SNAPSHOT_EVERY = 5


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


def append(
    session: Session,
    stream_id: str,
    expected_version: int,
    events: list[Event],
    correlation_id: str | None,
    now: datetime,
) -> list[Appended]:
    """Add events after `expected_version`; ConcurrencyError if that is not the last one."""
    rows = [
        StoredEvent(
            stream_id=stream_id,
            version=expected_version + i + 1,
            event_type=event.type,
            data=json.dumps(event.data),
            correlation_id=correlation_id,
            recorded_at=now,
        )
        for i, event in enumerate(events)
    ]
    try:
        with session.begin_nested():
            session.add_all(rows)
            session.flush()
    except IntegrityError:
        raise ConcurrencyError(stream_id, expected_version) from None
    return [Appended(row.position, row.version) for row in rows]


def load(session: Session, stream_id: str) -> Transfer | None:
    """The aggregate from its latest snapshot and the events after it."""
    snapshot = session.get(Snapshot, stream_id)
    after = snapshot.version if snapshot else 0
    rows = session.scalars(
        select(StoredEvent)
        .where(StoredEvent.stream_id == stream_id, StoredEvent.version > after)
        .order_by(StoredEvent.version)
    ).all()
    if snapshot is None and not rows:
        return None
    state = json.loads(snapshot.state) if snapshot else None
    return Transfer.replay([Event(row.event_type, json.loads(row.data)) for row in rows], state)


def maybe_snapshot(
    session: Session, transfer: Transfer, previous_version: int, now: datetime
) -> None:
    if transfer.version // SNAPSHOT_EVERY == previous_version // SNAPSHOT_EVERY:
        return
    snapshot = session.get(Snapshot, transfer.transfer_id)
    state = json.dumps(transfer.snapshot())
    if snapshot is None:
        session.add(
            Snapshot(
                stream_id=transfer.transfer_id, version=transfer.version, state=state, taken_at=now
            )
        )
    else:
        snapshot.version, snapshot.state, snapshot.taken_at = transfer.version, state, now


def read_all(session: Session, after_position: int = 0, batch: int = 500):
    """Every event in global order, from `after_position` on."""
    while True:
        rows = session.scalars(
            select(StoredEvent)
            .where(StoredEvent.position > after_position)
            .order_by(StoredEvent.position)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after_position = rows[-1].position

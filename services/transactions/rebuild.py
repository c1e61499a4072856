"""Rebuilding the read models by replaying the event store, while the platform runs.

The projections (transfer_view, account_history) are built anew beside the
live ones and swapped in, so readers and the saga carry on meanwhile:

1. Into empty copies of the tables (`<name>_next`, no index yet), every
   stream is replayed from its events, read in (stream, version) order so
   one stream at a time is in memory, and its rows written in bulk. The
   indexes are built once the copies are full: cheaper than keeping them
   up to date row by row.
2. Under a lock that holds back new events for a moment (reads go on),
   the streams that moved since (whose snapshot is past the version
   replayed) are replayed again, and the copies replace the live tables
   with their indexes and constraints renamed to the originals' names.

A fold that runs during step 1 updates the live tables and is caught up in
step 2, so nothing a step wrote is lost. Statements the services prepared
against the old tables are planned again against the new ones by
PostgreSQL (it resolves names again when a table they use goes away).
"""

import itertools
import json
import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

from sqlalchemy import Column, Index, MetaData, Table, bindparam, delete, select, text, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.transactions import projections
from services.transactions.domain import Event, Transfer
from services.transactions.models import (
    AccountHistory,
    Snapshot,
    StoredEvent,
    TransferView,
    metadata,
)
from shared.database import UnitOfWork, bulk_insert, connection_of

log = logging.getLogger(__name__)

_events = StoredEvent.__table__
_snapshots = Snapshot.__table__
PROJECTIONS = (TransferView.__table__, AccountHistory.__table__)
NEXT = "_next"

_IN_STREAM_ORDER = select(
    _events.c.position, _events.c.stream_id, _events.c.version, _events.c.event_type,
    _events.c.data,
).order_by(_events.c.stream_id, _events.c.version)  # fmt: skip
# A page of events after (stream, version).
_PAGE = _IN_STREAM_ORDER.where(
    tuple_(_events.c.stream_id, _events.c.version)
    > tuple_(bindparam("after_stream"), bindparam("after_version"))
).limit(bindparam("page"))
# The events of the streams named.
_STREAMS = _IN_STREAM_ORDER.where(_events.c.stream_id.in_(bindparam("streams", expanding=True)))


def _copy(table: Table, keyed: bool) -> Table:
    """`table`'s columns, named `<name>_next`, without indexes and, unless
    `keyed`, without its key (built after the load on PostgreSQL: cheaper
    than a random B-tree insert per row). The key is named by the service's
    convention after the copy's name, so it clashes with nothing."""
    columns = [
        Column(
            column.name,
            column.type,
            primary_key=keyed and column.primary_key,
            nullable=column.nullable,
        )
        for column in table.columns
    ]
    return Table(
        table.name + NEXT, MetaData(naming_convention=metadata.naming_convention), *columns
    )


def streams(
    read: Callable[[], ContextManager[Connection]], page: int = 20_000
) -> Iterator[tuple[Transfer, int, int]]:
    """Every stream replayed: (transfer, position of its first event, its event count).

    Read a page at a time from a connection `read()` lends (outside any
    transaction on PostgreSQL: events are only ever appended, and what is
    appended meanwhile is caught up afterwards)."""
    return _fold(_every_event(read, page))


def _every_event(read, page: int) -> Iterator:
    """Every event, in (stream, version) order, a page at a time."""
    after = ("", 0)
    while True:
        with read() as connection:
            rows = connection.execute(
                _PAGE, {"after_stream": after[0], "after_version": after[1], "page": page}
            ).all()
        yield from rows
        if len(rows) < page:
            return
        after = (rows[-1].stream_id, rows[-1].version)


def _fold(rows) -> Iterator[tuple[Transfer, int, int]]:
    """Events in (stream, version) order folded a stream at a time:
    (transfer, position of its first event, its event count). Rows are
    _IN_STREAM_ORDER's columns, unpacked as tuples (attribute access per row
    cost a seventh of the rebuild's speed)."""
    for _, stream in itertools.groupby(rows, key=operator.itemgetter(1)):
        transfer, first, count = Transfer(), None, 0
        for position, _stream_id, _version, event_type, data in stream:
            first = position if first is None else first
            transfer.apply(Event(event_type, json.loads(data)))
            count += 1
        yield transfer, first, count


def _batches(replayed, copies, size: int = 5_000) -> Iterator[tuple[list, int]]:
    """The view copy's rows for replayed streams, a batch at a time: (views, events).
    (Each transfer's account history follows from its view row: _write_history.)"""
    view_row = operator.itemgetter(*(column.key for column in copies[0].columns))
    views, events = [], 0
    for transfer, first, count in replayed:
        views.append(view_row(projections.view_row(transfer, first)))
        events += count
        if len(views) >= size:
            yield views, events
            views, events = [], 0
    if views:
        yield views, events


def _write(session: Session, copies, batches) -> int:
    replayed = 0
    for views, events in batches:
        bulk_insert(session, copies[0], views)
        replayed += events
    return replayed


def _fill(session: Session, copies, batches) -> int:
    """The copies filled from batches of view rows (and the history they
    imply), then indexed; returns the events replayed."""
    events = _write(session, copies, batches)
    _write_history(session, copies)
    _index(session, copies)
    return events


def _write_history(session: Session, copies, transfer_ids: list[str] | None = None) -> None:
    """The history copy's rows, from the view copy's, in the database."""
    connection_of(session).execute(
        projections.history_from_views(copies[0], copies[1], transfer_ids)
    )


class _Writer(threading.Thread):
    """Writes the copies' rows while the replay goes on (a green thread in a
    service, a real one elsewhere): the database and Python work at once."""

    def __init__(self, uow: UnitOfWork, copies):
        super().__init__(name="rebuild-writer", daemon=True)
        self.uow, self.copies = uow, copies
        self.batches: queue.Queue = queue.Queue(maxsize=4)
        self.replayed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.uow.commit_on_exit() as session:
                _no_statement_timeout(session)
                self.replayed = _fill(session, self.copies, iter(self.batches.get, None))
        except BaseException as error:  # noqa: BLE001 (handed to the rebuilding thread)
            self.error = error
            while self.batches.get() is not None:  # let the replay finish feeding
                pass


def _index(session: Session, copies) -> None:
    connection = connection_of(session)
    for table, copy in zip(PROJECTIONS, copies, strict=True):
        if not copy.primary_key.columns:
            key = ", ".join(column.name for column in table.primary_key.columns)
            connection.execute(
                text(f"ALTER TABLE {copy.name} ADD CONSTRAINT pk_{copy.name} PRIMARY KEY ({key})")
            )
        for index in table.indexes:
            columns = [copy.c[column.name] for column in index.columns]
            Index(index.name + NEXT, *columns, unique=index.unique).create(connection)


def rebuild(uow: UnitOfWork) -> int:
    """Replay every stream into fresh projections and swap them in; returns
    how many events were replayed."""
    started = time.monotonic()
    sqlite = uow.dialect_name() == "sqlite"  # SQLite adds no key to a table it has made
    copies = tuple(_copy(table, keyed=sqlite) for table in PROJECTIONS)
    with uow.commit_on_exit() as session:
        connection = connection_of(session)
        for copy in copies:
            copy.drop(connection, checkfirst=True)
            copy.create(connection)
        if sqlite:
            # One connection per process (and writers serialised anyway):
            # read and write on it in turn.
            replayed = _fill(
                session, copies, _batches(streams(lambda: nullcontext(connection)), copies)
            )
    if not sqlite:
        replayed = _write_beside(uow, copies)
    built = time.monotonic()
    log.info(
        "read models replayed beside the live ones; catching up and swapping",
        extra={"events": replayed, "seconds": round(built - started, 1)},
    )
    with uow.commit_on_exit() as session:
        _no_statement_timeout(session)
        _hold_back_new_events(session)
        caught_up = _catch_up(session, copies)
        _swap(session, copies)
    log.info(
        "read models rebuilt",
        extra={
            "events": replayed + caught_up,
            "caught_up": caught_up,
            "swap_seconds": round(time.monotonic() - built, 1),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    return replayed + caught_up


def _write_beside(uow: UnitOfWork, copies) -> int:
    """Replay on one connection while a writer fills the copies on another."""
    writer = _Writer(uow, copies)
    writer.start()
    try:
        for batch in _batches(streams(uow.read), copies):
            if writer.error is not None:
                break
            writer.batches.put(batch)
    finally:
        writer.batches.put(None)
        writer.join()
    if writer.error is not None:
        raise writer.error
    return writer.replayed


def _no_statement_timeout(session: Session) -> None:
    # Indexing a million rows takes longer than a request may, and sorts
    # them faster with room (this transaction only).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = 0"))
        session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))


def _hold_back_new_events(session: Session) -> None:
    """Appends wait until this transaction ends; reads carry on."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {_events.name} IN EXCLUSIVE MODE"))


def _catch_up(session: Session, copies) -> int:
    """Replay again the streams that moved since they were replayed (or began since)."""
    view_copy, history_copy = copies
    connection = connection_of(session)
    moved = (
        connection.execute(
            select(_snapshots.c.stream_id)
            .select_from(
                _snapshots.outerjoin(view_copy, view_copy.c.transfer_id == _snapshots.c.stream_id)
            )
            .where(view_copy.c.version.is_(None) | (view_copy.c.version != _snapshots.c.version))
        )
        .scalars()
        .all()
    )
    if not moved:
        return 0
    connection.execute(delete(view_copy).where(view_copy.c.transfer_id.in_(moved)))
    connection.execute(delete(history_copy).where(history_copy.c.transfer_id.in_(moved)))
    # A busy platform moves thousands meanwhile: their events a thousand streams at a time.
    rows = itertools.chain.from_iterable(
        connection.execute(_STREAMS, {"streams": moved[chunk : chunk + 1000]}).all()
        for chunk in range(0, len(moved), 1000)
    )
    replayed = _fold(rows)
    caught_up = _write(session, copies, _batches(replayed, copies))
    _write_history(session, copies, moved)
    return caught_up


def _swap(session: Session, copies) -> None:
    """The copies replace the live tables, under the live names throughout."""
    connection = connection_of(session)
    postgresql = session.get_bind().dialect.name == "postgresql"
    for table, copy in zip(PROJECTIONS, copies, strict=True):
        table.drop(connection)
        connection.execute(text(f"ALTER TABLE {copy.name} RENAME TO {table.name}"))
        for index in table.indexes:
            if postgresql:
                connection.execute(text(f"ALTER INDEX {index.name}{NEXT} RENAME TO {index.name}"))
            else:  # SQLite cannot rename an index: make it again under its name
                connection.execute(text(f"DROP INDEX {index.name}{NEXT}"))
                index.create(connection)
        if postgresql:
            # The key built after the load, named as _index names it.
            connection.execute(
                text(
                    f"ALTER TABLE {table.name} RENAME CONSTRAINT pk_{copy.name} "
                    f"TO {table.primary_key.name}"
                )
            )

"""Transactional inbox: an event's effect happens once per handler.

Delivery is at least once (the outbox relay, a retry, a replay from the
dead-letter queue, a redelivery after a crash can all repeat an event). A
consumer therefore records each event it handles in its own database, in
the same transaction as the effect:

    with self.db.commit_on_exit() as session:
        if not inbox.claim(session, envelope, "transactions.on_funds_reserved"):
            return  # seen before: the effect is already committed
        ...  # the effect, and any outbox events it records

The claim and the effect commit together or roll back together: a handler
that fails after claiming leaves no row, so the retry claims again.

Race safety: the claim is an INSERT that does nothing on conflict. Two
transactions claiming the same (event_id, handler) at once cannot both
succeed: on PostgreSQL the second INSERT waits on the first one's
uncommitted row and then inserts nothing (first committed) or inserts
(first rolled back); on SQLite writers are serialised by the database lock.

A claim without a round trip (PostgreSQL): in a use case decorated with
`shared.database.claims_deferred` (as `handle_once` is), the claim is a
plain INSERT that travels with the transaction's next statement, and the
use case goes on as if the event were new. Almost every delivery is the
first, so that is almost always right; a duplicate's INSERT then violates
the inbox's key (waiting first for a concurrent claim to commit or roll
back, as above), the transaction rolls back as a whole, and the use case
runs again with the claim asked first, which finds the row.
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Column, Index, MetaData, String, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import metrics
from shared.database import UnitOfWork, advisory_lock, claim_once, claims_deferred
from shared.sqltypes import UtcDateTime

TABLE_NAME = "inbox"


def inbox_table(metadata: MetaData) -> Table:
    """The inbox, added to a consuming service's metadata (and migrations)."""
    return Table(
        TABLE_NAME,
        metadata,
        Column("event_id", String(36), primary_key=True),
        # The consuming handler, "<service>.<method>": two handlers in one
        # service each handle the same event once.
        Column("handler", String(200), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("handled_at", UtcDateTime, nullable=False),
        Index("ix_inbox_handled_at", "handled_at"),
    )


_INBOX = inbox_table(MetaData())


class InvalidEnvelope(ValueError):
    """The message has no usable event id, so it cannot be deduplicated."""


def claim(session: Session, envelope: Mapping, handler: str) -> bool:
    """Record that `handler` handles this event, in the caller's transaction.

    Returns True the first time, False when the event was already handled
    by this handler (a duplicate delivery: skip the effect). The row is
    only durable if the caller's transaction commits. Inside a
    `claims_deferred` use case on PostgreSQL it returns True without asking,
    and a duplicate fails the transaction instead (module docstring).
    """
    event_id = envelope.get("event_id") if isinstance(envelope, Mapping) else None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 36:
        raise InvalidEnvelope(f"event_id must be a string of 1 to 36 characters, got {event_id!r}")
    if not handler:
        raise ValueError("handler must name the consuming handler")
    values = {
        "event_id": event_id,
        "handler": handler,
        "event_type": str(envelope.get("type") or "")[:100],
        "handled_at": datetime.now(UTC),
    }
    if session.get_bind().dialect.name in ("postgresql", "sqlite"):
        new = claim_once(session, _INBOX, values)
        if not new:
            metrics.INBOX_DUPLICATES.labels(handler).inc()
        return new
    # Any other database: insert in a savepoint, a duplicate key means seen.
    try:
        with session.begin_nested():
            session.execute(_INBOX.insert().values(**values))
    except IntegrityError:
        metrics.INBOX_DUPLICATES.labels(handler).inc()
        return False
    return True


Result = TypeVar("Result")


@claims_deferred
def handle_once(
    uow: UnitOfWork,
    envelope: Mapping,
    handler: str,
    effect: Callable[[Session], Result],
    *,
    lock: str | None = None,
) -> Result | None:
    """A saga participant's step: in one transaction, take `lock` (when the
    step must not interleave with another one on the same key), claim the
    event for `handler`, and make the effect (which stages its outcome
    events in the outbox). Returns the effect's result, or None when the
    event was handled before."""
    with uow.commit_on_exit() as session:
        if lock is not None:
            advisory_lock(session, lock)
        if not claim(session, envelope, handler):
            return None
        return effect(session)

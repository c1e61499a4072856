"""Transactional outbox: events leave only if the state change committed.

A producer stages an event inside the same database transaction as the
change the event describes (`stage(session, event)` for the saga's typed
contracts, `record_event(session, type, payload)` for plain ones): the row
is written with that transaction's commit (a deferred write, so it costs
no round trip of its own), and the message is handed to the service's
relay once the commit succeeded. Delivery is at least once; consumers
deduplicate by event_id.

The relay publishes what it was handed straight from memory, in batches,
waiting once for the broker's confirms of each batch (pipelined), and
marks the confirmed rows published a few at a time (one UPDATE for many
events). Nothing is read back from the table on that path.

Saga events (shared.contracts.EVENTS) are published `mandatory`: one no
queue is bound for (its consumer never declared, a new event type deployed
before its consumer) comes back from the broker (basic.return) instead of
being dropped. It is not marked published: it stays pending, its attempts
counted, is logged at ERROR with its routing key, and is published again
by the sweep after a backoff (2 s doubling, at most 60 s), until a queue
is bound. The broker counts every return
(rabbitmq_global_messages_unroutable_returned_total): the EventsUnroutable
alert (ops/prometheus/rules/events.yml, docs/RUNBOOKS.md) fires while they
go on. Other events (auth's) are not mandatory: the gateway's
revocation feed, for one, has no queue while no gateway runs.

What the memory path cannot cover, the sweep does: a row whose process
died between commit and publish, a batch the broker did not confirm, a row
committed by another process (a script, a crashed instance). Every second
the relay takes the pending rows older than OUTBOX_GRACE_SECONDS (and at
start-up every pending row: nothing in this process's memory can hold
them) under a lease (`claimed_until`, SKIP LOCKED on PostgreSQL, so
several instances take different rows and a relay that dies mid-publish
only delays its rows by the lease) and publishes them. A row published
from memory that a sweep also takes is published twice: consumers'
inboxes make that harmless.
"""

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import amqp
from kombu import Connection
from nameko.constants import HEADER_PREFIX
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared import broker, config, contracts, correlation, tracing
from shared.database import STAGED_EVENTS, Database, defer
from shared.events import envelope
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

_BATCH = 200
CONFIRM_TIMEOUT = 10.0
# A row taken by a sweep is not taken again for this long (its relay may
# have died mid-publish).
LEASE_SECONDS = 30.0
# An unroutable event is published again after this backoff (doubling per
# attempt, capped): short enough that the alert, which looks for returns
# in every 5 minutes, keeps firing while one is stuck.
UNROUTABLE_BACKOFF = 2.0
UNROUTABLE_MAX_BACKOFF = 60.0
# RabbitMQ's sender-selected distribution: more routing keys, not delivered.
BCC_HEADER = "BCC"

CONFIRMED, REFUSED, UNROUTABLE = "confirmed", "refused", "unroutable"


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("body", Text, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("claimed_until", UtcDateTime),
        Index("ix_outbox_pending", "published_at", "id"),
    )


OUTBOX = outbox_table(MetaData())
_INSERT = OUTBOX.insert().inline()
# Rows the relay saw confirmed, marked published: on PostgreSQL with the ids
# as an array, so that one prepared statement serves any number of them;
# elsewhere as a list.
_MARKED = {"published_at": bindparam("published_at"), "claimed_until": None}
_MARK_PUBLISHED_PG = (
    update(OUTBOX)
    .where(OUTBOX.c.event_id == any_(bindparam("event_ids", type_=postgresql.ARRAY(String))))
    .values(**_MARKED)
)
_MARK_PUBLISHED_LISTED = (
    update(OUTBOX)
    .where(OUTBOX.c.event_id.in_(bindparam("event_ids", expanding=True)))
    .values(**_MARKED)
)


def _sweep_statement(skip_locked: bool):
    """Lease the oldest rows left pending (created before `stale_before`,
    not leased by a relay whose lease still runs), counting the attempt;
    built once per dialect: a sweep runs every second, mostly to find
    nothing. On PostgreSQL several instances share the table, and each row
    goes to one relay."""
    stale = (
        select(OUTBOX.c.id)
        .where(
            OUTBOX.c.published_at.is_(None),
            OUTBOX.c.created_at < bindparam("stale_before"),
            or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("now")),
        )
        .order_by(OUTBOX.c.id)
        .limit(_BATCH)
    )
    if skip_locked:
        stale = stale.with_for_update(skip_locked=True)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(stale.scalar_subquery()))
        .values(claimed_until=bindparam("lease_until"), attempts=OUTBOX.c.attempts + 1)
        .returning(
            OUTBOX.c.id,
            OUTBOX.c.event_id,
            OUTBOX.c.event_type,
            OUTBOX.c.body,
            OUTBOX.c.headers,
            OUTBOX.c.attempts,
        )
    )


_SWEEP_PG = _sweep_statement(skip_locked=True)
_SWEEP_LISTED = _sweep_statement(skip_locked=False)


@dataclass(frozen=True)
class Outgoing:
    """A staged event as the relay publishes it."""

    event_id: str
    routing_key: str
    body: str
    headers: dict
    mandatory: bool = False


def is_saga_event(event_type: str) -> bool:
    """Published mandatory: losing one would stall a transfer."""
    return event_type in contracts.EVENTS


def unroutable_backoff(attempts: int) -> float:
    """Seconds before an unroutable event is published again, after `attempts`."""
    return min(UNROUTABLE_MAX_BACKOFF, UNROUTABLE_BACKOFF * 2.0 ** max(attempts - 1, 0))


def record_event(
    session: Session,
    event_type: str,
    payload: dict,
    causation_id: str | None = None,
    also_to: Sequence[str] = (),
) -> dict:
    """Stage an event in the caller's transaction; returns its envelope.

    `also_to`: routing keys the broker also routes the event by, besides
    its own (RabbitMQ's BCC header, which it removes before delivery):
    one gateway process's outcome queue, say, instead of every one of
    them binding every outcome.
    """
    cid = correlation.current()
    message = envelope(event_type, payload, correlation_id=cid, causation_id=causation_id)
    # nameko reads context data from "nameko.*" headers: the consumer's
    # worker picks the correlation id up from there.
    headers = {f"{HEADER_PREFIX}.{correlation.CONTEXT_KEY}": cid} if cid else {}
    if also_to:
        headers[BCC_HEADER] = list(also_to)
    # The step's span, so that the consumer's continues its trace, however
    # late the row is published (shared/tracing.py).
    traceparent = tracing.current_traceparent()
    if traceparent:
        headers[tracing.MESSAGE_HEADER] = traceparent
    outgoing = Outgoing(
        message["event_id"],
        contracts.routing_key_of(event_type, payload),
        json.dumps(message),
        headers,
        is_saga_event(event_type),
    )
    defer(
        session,
        _INSERT,
        {
            "event_id": outgoing.event_id,
            "event_type": event_type,
            "body": outgoing.body,
            "headers": json.dumps(headers),
            "created_at": datetime.now(UTC),
        },
    )
    session.info.setdefault(STAGED_EVENTS, []).append(outgoing)
    return message


def stage(
    session: Session,
    event: contracts.Event,
    causation_id: str | None = None,
    also_to: Sequence[str] = (),
) -> dict:
    """Stage a typed saga event (shared.contracts) in the caller's transaction."""
    return record_event(
        session, event.TYPE, event.payload(), causation_id=causation_id, also_to=also_to
    )


class ConfirmedPublisher:
    """Publishes batches to one exchange and waits for all their confirms at once.

    One connection and channel in confirm mode, made on first use and
    dropped on any error (the caller's rows stay pending and are retried).
    A mandatory message the exchange cannot route is returned before its
    confirm (basic.return, then basic.ack): it is identified by its
    message id, the event id. Not shared between greenthreads: the relay
    owns one.
    """

    def __init__(self, access: broker.BrokerAccess, exchange):
        self._access = access
        self._exchange = exchange
        self.exchange_name = exchange.name
        self._connection: Connection | None = None
        self._channel = None
        self._next_tag = 1
        self._confirmed: dict[int, bool] = {}
        self._returned: set[str] = set()

    def _open(self):
        connection = self._access.connect()  # every wait bounded (shared.broker)
        try:
            channel = connection.channel()
            self._exchange(channel).declare()
            channel.confirm_select()
        except BaseException:
            broker.discard(connection)  # not left open behind the caller's retry
            raise
        channel.events["basic_ack"].add(lambda tag, multiple: self._settle(tag, multiple, True))
        channel.events["basic_nack"].add(lambda tag, multiple: self._settle(tag, multiple, False))
        channel.events["basic_return"].add(self._returned_message)
        self._connection, self._channel, self._next_tag = connection, channel, 1
        self._confirmed, self._returned = {}, set()

    def _returned_message(self, exc, exchange, routing_key, message) -> None:
        self._returned.add(message.properties.get("message_id"))

    def _settle(self, tag: int, multiple: bool, acked: bool) -> None:
        tags = [t for t in self._confirmed if t <= tag] if multiple else [tag]
        for settled in tags:
            if settled in self._confirmed:
                self._confirmed[settled] = acked

    def publish_batch(
        self, messages: list[Outgoing], timeout: float = CONFIRM_TIMEOUT
    ) -> list[str]:
        """Publish the messages; for each, in order, CONFIRMED, REFUSED (the
        broker nacked it) or UNROUTABLE (mandatory, and no queue is bound for
        it). Raises if the connection fails: then none of the batch may be
        taken as published."""
        if self._channel is None:
            self._open()
        tags = []
        try:
            for item in messages:
                tag = self._next_tag
                self._next_tag += 1
                self._confirmed[tag] = None
                tags.append(tag)
                self._channel.basic_publish(
                    amqp.Message(
                        item.body,
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                        message_id=item.event_id,
                        # The producer, vouched for by the broker (shared.broker).
                        user_id=self._access.identity,
                        application_headers=item.headers,
                    ),
                    exchange=self._exchange.name,
                    routing_key=item.routing_key,
                    mandatory=item.mandatory,
                )
            deadline = time.monotonic() + timeout
            while any(self._confirmed[tag] is None for tag in tags):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"broker confirmed too little of {len(tags)} events")
                self._connection.drain_events(timeout=remaining)
        except BaseException:
            self.discard()
            raise
        outcome = []
        for item, tag in zip(messages, tags, strict=True):
            if not self._confirmed.pop(tag):
                outcome.append(REFUSED)
            elif item.event_id in self._returned:
                self._returned.discard(item.event_id)
                outcome.append(UNROUTABLE)
            else:
                outcome.append(CONFIRMED)
        return outcome

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with suppress(Exception):
                connection.release()

    def discard(self) -> None:
        """Drop a connection that failed, without waiting on it."""
        connection, self._connection, self._channel = self._connection, None, None
        broker.discard(connection)


class OutboxRelay(DependencyProvider):
    """Publishes this service's staged events: from memory after each commit,
    and, by a sweep, whatever was left pending in the table."""

    sweep_interval = 1.0
    # Marks of published rows wait for company this long at most (a mark is
    # a transaction; a row still unmarked when its process dies is only
    # published again, and inboxes drop the copy).
    mark_delay = 0.5

    def __init__(self):
        self._wake = threading.Event()
        self._stopping = False
        self._database: Database | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._outgoing: deque[Outgoing] = deque()
        self._published: list[str] = []  # confirmed event ids not yet marked
        self._oldest_unmarked = 0.0
        self._next_sweep = 0.0
        self._started_at: datetime | None = None
        self.grace = 5.0

    def setup(self):
        container_config = self.container.config
        self._publisher = ConfirmedPublisher(
            broker.from_config(container_config),
            get_event_exchange(self.container.service_name, container_config),
        )
        self.grace = config.env_int("OUTBOX_GRACE_SECONDS", 5, 0)

    def start(self):
        self._database = next(
            dep for dep in self.container.dependencies if isinstance(dep, Database)
        )
        self._database.add_commit_listener(self._committed)
        # Anything pending now was staged before this process could hold it.
        self._started_at = datetime.now(UTC)
        self.container.spawn_managed_thread(self._run, identifier="outbox_relay")

    def stop(self):
        self._stopping = True
        self._wake.set()

    def kill(self):
        self.stop()

    def _committed(self, staged: list[Outgoing]) -> None:
        self._outgoing.extend(staged)
        self._wake.set()

    def _run(self):
        failures = 0
        try:
            while not self._stopping:
                if failures:
                    # After a failure, back off even if commits keep waking us:
                    # retrying at the commit rate would hammer a sick broker.
                    self._wake.clear()
                    time.sleep(min(30, 2**failures))  # green under monkey patching
                else:
                    self._wake.wait(self._idle_timeout())
                    self._wake.clear()
                try:
                    self.relay()
                    failures = 0
                except Exception:  # keep relaying: the rows stay pending and are swept
                    failures += 1
                    # What memory held is in the table too: the sweep takes it.
                    self._outgoing.clear()
                    log.exception(
                        "outbox relay failed; rows stay pending", extra={"failures": failures}
                    )
            try:
                self._mark_published()
            except Exception:  # stopping: a sweep publishes them again; inboxes drop copies
                log.warning("could not mark published rows while stopping", exc_info=True)
        finally:
            self._publisher.close()

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        due = self._next_sweep
        if self._published:
            due = min(due, self._oldest_unmarked + self.mark_delay)
        return max(0.0, due - now)

    def relay(self) -> None:
        """One pass: publish what commits handed over, sweep if due, mark."""
        while self._outgoing and not self._stopping:
            batch = [self._outgoing.popleft() for _ in range(min(_BATCH, len(self._outgoing)))]
            outcome = self._publish(batch)
            self._settle(batch, outcome, attempts=dict.fromkeys((i.event_id for i in batch), 0))
            # A refused one stays pending: the sweep takes it after the grace.
        if time.monotonic() >= self._next_sweep:
            while not self._stopping and self.sweep() == _BATCH:
                pass
            self._next_sweep = time.monotonic() + self.sweep_interval
        if self._published and (
            len(self._published) >= _BATCH
            or time.monotonic() >= self._oldest_unmarked + self.mark_delay
        ):
            self._mark_published()

    def _publish(self, batch: list[Outgoing]) -> list[str]:
        if not tracing.enabled():
            return self._publisher.publish_batch(batch)
        started = time.time_ns()
        outcome = self._publisher.publish_batch(batch)
        tracing.record_publish(batch, outcome, started)
        return outcome

    def _settle(self, batch: list[Outgoing], outcome: list[str], attempts: dict[str, int]) -> None:
        """Note what was published; hold back what came back unroutable.

        `attempts`: each row's attempts as counted so far (the sweep counts
        its own; the memory path has counted none)."""
        self._note_published(
            item.event_id
            for item, result in zip(batch, outcome, strict=True)
            if result == CONFIRMED
        )
        unroutable = [
            item for item, result in zip(batch, outcome, strict=True) if result == UNROUTABLE
        ]
        if unroutable:
            self._hold_unroutable(unroutable, attempts)

    def _hold_unroutable(self, items: list[Outgoing], attempts: dict[str, int]) -> None:
        """Count the attempt and lease each row for its backoff: the sweep
        publishes it again then, until a queue is bound for it."""
        now = datetime.now(UTC)
        exchange = self._publisher.exchange_name
        with self._database.engine.begin() as conn:
            for item in items:
                tried = attempts[item.event_id] or 1
                delay = unroutable_backoff(tried)
                conn.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.event_id == item.event_id, OUTBOX.c.published_at.is_(None))
                    .values(
                        attempts=tried,
                        claimed_until=now + timedelta(seconds=delay),
                    )
                )
                log.error(
                    "event %s is unroutable: no queue is bound for routing key %r on %s; "
                    "it stays in the outbox and is published again in %.0f s",
                    item.event_id,
                    item.routing_key,
                    exchange,
                    delay,
                    extra={
                        "event_id": item.event_id,
                        "routing_key": item.routing_key,
                        "exchange": exchange,
                        "attempts": tried,
                    },
                )

    def _note_published(self, event_ids) -> None:
        if not self._published:
            self._oldest_unmarked = time.monotonic()
        self._published.extend(event_ids)

    def _mark_published(self) -> None:
        published, self._published = self._published, []
        if not published:
            return
        try:
            with self._database.engine.connect() as conn:
                postgresql_ = conn.dialect.name == "postgresql"
                mark = _MARK_PUBLISHED_PG if postgresql_ else _MARK_PUBLISHED_LISTED
                conn.execute(mark, {"event_ids": published, "published_at": datetime.now(UTC)})
                conn.commit()
        except Exception:
            # Unmarked rows would be published again by a sweep: keep trying.
            self._published = published + self._published
            raise

    def sweep(self) -> int:
        """Publish one batch of rows left pending; returns how many it took.

        One statement leases them (skipping rows another relay holds);
        their attempts are counted. A row the broker does not confirm is
        taken again once its lease has run out.
        """
        now = datetime.now(UTC)
        engine = self._database.engine
        take = _SWEEP_PG if engine.dialect.name == "postgresql" else _SWEEP_LISTED
        parameters = {
            "now": now,
            # Old enough that its own process would have published it by now,
            # or staged before this process started.
            "stale_before": max(now - timedelta(seconds=self.grace), self._started_at),
            "lease_until": now + timedelta(seconds=LEASE_SECONDS),
        }
        with engine.begin() as conn:
            rows = sorted(conn.execute(take, parameters).all(), key=lambda row: row.id)
        if rows:
            batch = [
                Outgoing(
                    row.event_id,
                    _routing_key(row),
                    row.body,
                    json.loads(row.headers),
                    is_saga_event(row.event_type),
                )
                for row in rows
            ]
            outcome = self._publish(batch)
            self._settle(batch, outcome, attempts={row.event_id: row.attempts for row in rows})
        return len(rows)


def _routing_key(row) -> str:
    """`<type>.<kind>` for events about a transfer (shared.contracts), else the type."""
    try:
        payload = json.loads(row.body).get("payload")
    except (ValueError, AttributeError):
        payload = None
    return contracts.routing_key_of(row.event_type, payload or {})

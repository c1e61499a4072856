"""Transactional outbox: events leave only if the state change committed.

A producer stages an event inside the same database transaction as the
change the event describes (`stage(session, event)` for the saga's typed
contracts, `record_event(session, type, payload)` for plain ones). The
relay, running in the service process, publishes pending rows to the
service's event exchange and marks them published. A crash between commit
and publish leaves the row pending, so it is published on the next pass:
delivery is at least once, and consumers deduplicate by event_id.

The relay publishes a batch and then waits once for the broker's confirms
of all of it (pipelined), instead of one round trip per row; a row counts
as published only once its own confirm arrived. On PostgreSQL several
instances share the table: each pass locks its rows (SKIP LOCKED), so
every row goes out through one relay.
"""

import json
import logging
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime

import amqp
from kombu import Connection
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    HEADER_PREFIX,
    LOGIN_METHOD_CONFIG_KEY,
)
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
    select,
    update,
)
from sqlalchemy.orm import Session

from shared import contracts, correlation
from shared.database import STAGED_EVENTS, Database
from shared.events import envelope
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

_BATCH = 200
CONFIRM_TIMEOUT = 10.0


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
        Index("ix_outbox_pending", "published_at", "id"),
    )


_OUTBOX = outbox_table(MetaData())
_INSERT = _OUTBOX.insert()


def record_event(
    session: Session, event_type: str, payload: dict, causation_id: str | None = None
) -> dict:
    """Stage an event in the caller's transaction; returns its envelope."""
    cid = correlation.current()
    message = envelope(event_type, payload, correlation_id=cid, causation_id=causation_id)
    # nameko reads context data from "nameko.*" headers: the consumer's
    # worker picks the correlation id up from there.
    headers = {f"{HEADER_PREFIX}.{correlation.CONTEXT_KEY}": cid} if cid else {}
    session.connection().execute(
        _INSERT,
        {
            "event_id": message["event_id"],
            "event_type": event_type,
            "body": json.dumps(message),
            "headers": json.dumps(headers),
            "created_at": datetime.now(UTC),
        },
    )
    session.info[STAGED_EVENTS] = True
    return message


def stage(session: Session, event: contracts.Event, causation_id: str | None = None) -> dict:
    """Stage a typed saga event (shared.contracts) in the caller's transaction."""
    return record_event(session, event.TYPE, event.payload(), causation_id=causation_id)


class ConfirmedPublisher:
    """Publishes batches to one exchange and waits for all their confirms at once.

    One connection and channel in confirm mode, made on first use and
    dropped on any error (the caller's rows stay pending and are retried).
    Not shared between greenthreads: the relay owns one.
    """

    def __init__(self, uri: str, exchange, *, ssl=None, login_method=None):
        self._uri, self._ssl, self._login_method = uri, ssl, login_method
        self._exchange = exchange
        self._connection: Connection | None = None
        self._channel = None
        self._next_tag = 1
        self._confirmed: dict[int, bool] = {}

    def _open(self):
        connection = Connection(self._uri, ssl=self._ssl, login_method=self._login_method)
        channel = connection.channel()
        self._exchange(channel).declare()
        channel.confirm_select()
        channel.events["basic_ack"].add(lambda tag, multiple: self._settle(tag, multiple, True))
        channel.events["basic_nack"].add(lambda tag, multiple: self._settle(tag, multiple, False))
        self._connection, self._channel, self._next_tag = connection, channel, 1
        self._confirmed = {}

    def _settle(self, tag: int, multiple: bool, acked: bool) -> None:
        tags = [t for t in self._confirmed if t <= tag] if multiple else [tag]
        for settled in tags:
            if settled in self._confirmed:
                self._confirmed[settled] = acked

    def publish_batch(self, messages, timeout: float = CONFIRM_TIMEOUT) -> list[bool]:
        """Publish (routing_key, body, headers) triples; True for each one the
        broker confirmed, in order. Raises if the connection fails: then none
        of the batch may be taken as published."""
        if self._channel is None:
            self._open()
        tags = []
        try:
            for routing_key, body, headers in messages:
                tag = self._next_tag
                self._next_tag += 1
                self._confirmed[tag] = None
                tags.append(tag)
                self._channel.basic_publish(
                    amqp.Message(
                        body,
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                        application_headers=headers,
                    ),
                    exchange=self._exchange.name,
                    routing_key=routing_key,
                )
            deadline = time.monotonic() + timeout
            while any(self._confirmed[tag] is None for tag in tags):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"broker confirmed too little of {len(tags)} events")
                self._connection.drain_events(timeout=remaining)
        except BaseException:
            self.close()
            raise
        outcome = [bool(self._confirmed.pop(tag)) for tag in tags]
        return outcome

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with suppress(Exception):
                connection.release()


class OutboxRelay(DependencyProvider):
    """Publishes this service's pending outbox rows; wakes on every commit."""

    poll_interval = 0.5

    def __init__(self):
        self._wake = threading.Event()
        self._stopping = False
        self._database: Database | None = None
        self._publisher: ConfirmedPublisher | None = None

    def setup(self):
        config = self.container.config
        self._publisher = ConfirmedPublisher(
            config[AMQP_URI_CONFIG_KEY],
            get_event_exchange(self.container.service_name, config),
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

    def start(self):
        self._database = next(
            dep for dep in self.container.dependencies if isinstance(dep, Database)
        )
        self._database.add_commit_listener(self._wake.set)
        self.container.spawn_managed_thread(self._run, identifier="outbox_relay")

    def stop(self):
        self._stopping = True
        self._wake.set()

    def kill(self):
        self.stop()

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
                    self._wake.wait(self.poll_interval)
                    self._wake.clear()
                try:
                    while not self._stopping and self.publish_pending() == _BATCH:
                        pass
                    failures = 0
                except Exception:  # keep relaying: the rows stay pending and are retried
                    failures += 1
                    log.exception(
                        "outbox relay failed; rows stay pending", extra={"failures": failures}
                    )
        finally:
            self._publisher.close()

    def publish_pending(self) -> int:
        """Publish one batch in id order; returns how many rows it looked at.

        One statement takes the batch: it marks the rows published and locks
        them (on PostgreSQL skipping rows another relay holds). The marks
        commit only once the broker confirmed the rows; a row it refused, or
        a batch cut short by a broken connection, is unmarked (its attempt
        counted) in the same transaction and goes out on a later pass.
        """
        engine = self._database.engine
        pending = (
            select(_OUTBOX.c.id)
            .where(_OUTBOX.c.published_at.is_(None))
            .order_by(_OUTBOX.c.id)
            .limit(_BATCH)
        )
        if engine.dialect.name == "postgresql":
            # Several instances share the table: each row goes to one relay.
            pending = pending.with_for_update(skip_locked=True)
        take = (
            update(_OUTBOX)
            .where(_OUTBOX.c.id.in_(pending.scalar_subquery()))
            .values(published_at=datetime.now(UTC))
            .returning(_OUTBOX.c.id, _OUTBOX.c.event_type, _OUTBOX.c.body, _OUTBOX.c.headers)
        )
        failure: Exception | None = None
        with engine.begin() as conn:
            rows = sorted(conn.execute(take).all(), key=lambda row: row.id)
            if not rows:
                return 0
            try:
                confirmed = self._publisher.publish_batch(
                    (_routing_key(row), row.body, json.loads(row.headers)) for row in rows
                )
            except Exception as exc:  # noqa: BLE001 (re-raised once the attempts are counted)
                confirmed, failure = [False] * len(rows), exc
            refused = [row.id for row, ok in zip(rows, confirmed, strict=True) if not ok]
            if refused:
                conn.execute(
                    update(_OUTBOX)
                    .where(_OUTBOX.c.id.in_(refused))
                    .values(published_at=None, attempts=_OUTBOX.c.attempts + 1)
                )
        if failure is not None:
            raise failure
        if refused:
            raise RuntimeError(f"the broker refused {len(refused)} event(s); they stay pending")
        return len(rows)


def _routing_key(row) -> str:
    """`<type>.<kind>` for events about a transfer (shared.contracts), else the type."""
    try:
        payload = json.loads(row.body).get("payload")
    except (ValueError, AttributeError):
        payload = None
    return contracts.routing_key_of(row.event_type, payload or {})

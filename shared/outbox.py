"""Transactional outbox: events leave only if the state change committed.

A producer calls `record_event(session, ...)` inside the same database
transaction as the change the event describes. The relay, running in the
service process, publishes pending rows to the service's event exchange
with publisher confirms and marks them published. A crash between commit
and publish leaves the row pending, so it is published on the next pass:
delivery is at least once, and consumers deduplicate by event_id.
"""

import json
import logging
import threading
import time
from datetime import UTC, datetime

from nameko.amqp.publish import Publisher
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

from shared import correlation
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


def record_event(
    session: Session, event_type: str, payload: dict, causation_id: str | None = None
) -> dict:
    """Stage an event in the caller's transaction; returns its envelope."""
    cid = correlation.current()
    message = envelope(event_type, payload, correlation_id=cid, causation_id=causation_id)
    # nameko reads context data from "nameko.*" headers: the consumer's
    # worker picks the correlation id up from there.
    headers = {f"{HEADER_PREFIX}.{correlation.CONTEXT_KEY}": cid} if cid else {}
    session.execute(
        _OUTBOX.insert().values(
            event_id=message["event_id"],
            event_type=event_type,
            body=json.dumps(message),
            headers=json.dumps(headers),
            created_at=datetime.now(UTC),
        )
    )
    session.info[STAGED_EVENTS] = True
    return message


class OutboxRelay(DependencyProvider):
    """Publishes this service's pending outbox rows; wakes on every commit."""

    poll_interval = 0.5

    def __init__(self):
        self._wake = threading.Event()
        self._stopping = False
        self._database: Database | None = None
        self._publisher: Publisher | None = None
        self._exchange = None

    def setup(self):
        config = self.container.config
        self._exchange = get_event_exchange(self.container.service_name, config)
        self._publisher = Publisher(
            config[AMQP_URI_CONFIG_KEY],
            use_confirms=True,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            declare=[self._exchange],
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

    def publish_pending(self) -> int:
        """Publish one batch in id order; returns how many rows it looked at.

        Rows sent are marked published in their own commit, even when a
        later row fails, and the failing row's attempt count is committed
        separately, so neither is rolled back with the failure.
        """
        engine = self._database.engine
        query = (
            select(_OUTBOX.c.id, _OUTBOX.c.event_type, _OUTBOX.c.body, _OUTBOX.c.headers)
            .where(_OUTBOX.c.published_at.is_(None))
            .order_by(_OUTBOX.c.id)
            .limit(_BATCH)
        )
        if engine.dialect.name == "postgresql":
            # Several instances share the table: each row goes to one relay.
            query = query.with_for_update(skip_locked=True)
        with engine.connect() as conn:
            with conn.begin():
                rows = conn.execute(query).all()
                published, failed = self._publish(rows)
                if published:
                    conn.execute(
                        update(_OUTBOX)
                        .where(_OUTBOX.c.id.in_(published))
                        .values(published_at=datetime.now(UTC))
                    )
            if failed is not None:
                row_id, error = failed
                with conn.begin():
                    conn.execute(
                        update(_OUTBOX)
                        .where(_OUTBOX.c.id == row_id)
                        .values(attempts=_OUTBOX.c.attempts + 1)
                    )
                raise error
        return len(rows)

    def _publish(self, rows) -> tuple[list[int], tuple[int, Exception] | None]:
        published = []
        for row in rows:
            try:
                self._publisher.publish(
                    json.loads(row.body),
                    exchange=self._exchange,
                    routing_key=row.event_type,
                    extra_headers=json.loads(row.headers),
                    # A broker that stops confirming (memory alarm, half-open
                    # socket) must not hold the batch's rows, or SQLite's one
                    # connection, for ever: give up and retry later.
                    confirm_timeout=CONFIRM_TIMEOUT,
                )
            except Exception as exc:  # noqa: BLE001 (reported to the caller with the row)
                return published, (row.id, exc)
            published.append(row.id)
        return published, None

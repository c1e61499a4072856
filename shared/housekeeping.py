"""Housekeeping: published outbox rows and old inbox ids are deleted on a schedule.

Every service runs it (shared.service.ServiceBase) on its own database,
for whichever of the two tables it has:

- outbox: a row is needed until it is published (the relay's sweep
  publishes what is pending). A published row is kept
  OUTBOX_RETENTION_HOURS (168: a week of "what did we send, when" for
  operators) and then deleted. A pending row is never deleted, however old.
- inbox: an event's id must outlive every copy of that event that can still
  arrive, or a late copy would make its effect twice. Copies come from the
  relay (its memory path and its sweep: seconds; an unmarked row republished
  after a database outage: the outage's length), the broker (a redelivery
  after a crash: the message's time in the queue), the retry queues (the
  longest backoff, 300 s) and an operator's replay from the dead-letter
  queue (any time). INBOX_RETENTION_DAYS (30) covers all but the last, and
  `python -m shared.dlq replay` refuses a message parked longer ago than
  that unless told --force. A copy that waited in a queue longer than the
  retention (a consumer stopped for a month) is the one case left: so the
  first pass runs one interval after start, once a backlog has drained.

Deletes go in batches of BATCH rows, one short transaction each, so they
never hold many row locks or a long snapshot. Several instances of a
service may run it at once: a delete is idempotent. Interval:
HOUSEKEEPING_INTERVAL_SECONDS (3600; 0 turns it off).
"""

import logging
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nameko.extensions import DependencyProvider
from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Engine

from shared import config
from shared.database import Database
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

BATCH = 5000

# Oldest first, by the index on each table's timestamp; a subquery with
# LIMIT because neither SQLite nor PostgreSQL takes DELETE ... LIMIT.
_OUTBOX = text(
    "DELETE FROM outbox WHERE id IN "
    "(SELECT id FROM outbox WHERE published_at < :before ORDER BY published_at LIMIT :batch)"
).bindparams(bindparam("before", type_=UtcDateTime))
_INBOX = text(
    "DELETE FROM inbox WHERE handled_at < :before AND event_id IN "
    "(SELECT event_id FROM inbox WHERE handled_at < :before ORDER BY handled_at LIMIT :batch)"
).bindparams(bindparam("before", type_=UtcDateTime))
_STATEMENTS = {"outbox": _OUTBOX, "inbox": _INBOX}


@dataclass(frozen=True)
class Retention:
    outbox: timedelta = timedelta(hours=168)
    inbox: timedelta = timedelta(days=30)

    @classmethod
    def from_env(cls) -> "Retention":
        return cls(
            outbox=timedelta(hours=config.env_int("OUTBOX_RETENTION_HOURS", 168, 1)),
            inbox=config.inbox_retention(),
        )


def prune(engine: Engine, table: str, before: datetime, batch: int = BATCH) -> int:
    """Delete `table`'s rows done with before `before`, a batch per
    transaction; returns how many went."""
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = connection.execute(_STATEMENTS[table], {"before": before, "batch": batch})
        deleted += count.rowcount
        if count.rowcount < batch:
            return deleted


def tables_of(engine: Engine) -> tuple[str, ...]:
    """Which of outbox and inbox this database has (its migrations decide)."""
    present = inspect(engine)
    return tuple(name for name in _STATEMENTS if present.has_table(name))


def housekeep(engine: Engine, retention: Retention, now: datetime) -> dict[str, int]:
    """One pass over the tables the database has; rows deleted per table."""
    cutoffs = {"outbox": now - retention.outbox, "inbox": now - retention.inbox}
    return {table: prune(engine, table, cutoffs[table]) for table in tables_of(engine)}


class Housekeeping(DependencyProvider):
    """Runs `housekeep` on the service's database every interval."""

    def __init__(self):
        self._stopped = threading.Event()  # green under nameko's monkey patching

    def setup(self):
        self.interval = config.env_int("HOUSEKEEPING_INTERVAL_SECONDS", 3600, 0)
        self.retention = Retention.from_env()

    def start(self):
        database = next(
            (dep for dep in self.container.dependencies if isinstance(dep, Database)), None
        )
        if self.interval and database is not None:
            self.container.spawn_managed_thread(
                lambda: self._run(database), identifier="housekeeping"
            )

    def stop(self):
        self._stopped.set()

    def kill(self):
        self._stopped.set()

    def _run(self, database: Database) -> None:
        # Instances started together spread out instead of deleting in step.
        wait = self.interval * random.uniform(1.0, 1.25)  # noqa: S311 (jitter, not a secret)
        while not self._stopped.wait(wait):
            wait = self.interval
            try:
                deleted = housekeep(database.engine, self.retention, datetime.now(UTC))
            except Exception:  # the next pass tries again; nothing is lost by waiting
                log.exception("housekeeping failed")
                continue
            if any(deleted.values()):
                log.info("housekeeping", extra={"deleted": deleted})

"""Inbox, retries and the dead-letter queue on the real RabbitMQ and PostgreSQL.

Small saga-step services are defined here; each test uses its own service
and event type, so queues never carry messages from one test to another.
Their database is one made for this module (dropped at the end).
"""

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import eventlet
import pytest
from kombu import Connection, Queue
from nameko.extensions import DependencyProvider
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared import correlation
from shared.database import Database, make_engine
from shared.dlq import ATTEMPTS, EXCEPTION_TYPE, ORIGINAL_QUEUE, PARKED_AT, dead_letter_queue_name
from shared.event_handlers import retry_queue_name, saga_step
from shared.events import envelope
from shared.inbox import claim, inbox_table
from shared.service import ServiceBase
from shared.topology import handler_queue_name, queue_settings
from tests.conftest import RUN_ID, _admin_connection, _admin_db_url
from tests.integration.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "inboxsrc"  # the (pretend) producing service: exchange "inboxsrc.events"

metadata = MetaData()
inbox = inbox_table(metadata)
effects = Table(
    "inbox_probe_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("handler", String(100), nullable=False),
)

# What the handlers saw, by event id (the containers run in this process).
CALLS: dict[str, list[dict]] = {}
# Remaining injected failures by event id; -1 fails forever.
FAULTS: dict[str, int] = {}


class ContextSpy(DependencyProvider):
    """The worker's context data (what nameko would send on as headers)."""

    def get_dependency(self, worker_ctx):
        return dict(worker_ctx.data)


def handle(service, envelope_, handler, hold=0.0):
    """A saga step: claim and effect in one transaction; may fail on purpose."""
    call = {
        "handler": handler,
        "started": time.monotonic(),
        "correlation_id": correlation.current(),
        "context_keys": sorted(service.context),
    }
    CALLS.setdefault(envelope_["event_id"], []).append(call)
    try:
        with service.db.commit_on_exit() as session:
            call["claimed"] = claim(session, envelope_, handler)
            if not call["claimed"]:
                return
            session.execute(
                effects.insert().values(event_id=envelope_["event_id"], handler=handler)
            )
            if hold:
                eventlet.sleep(hold)  # keep the claim uncommitted for a while
            remaining = FAULTS.get(envelope_["event_id"], 0)
            if remaining:
                FAULTS[envelope_["event_id"]] = remaining - 1 if remaining > 0 else -1
                raise RuntimeError("injected fault")
    finally:
        call["ended"] = time.monotonic()


class DedupProbe(ServiceBase):
    name = "inbox_dedup"
    db = Database()
    context = ContextSpy()

    @saga_step(SOURCE, "dedup_happened", attempts=2, backoff=0.1)
    def on_event(self, envelope_):
        handle(self, envelope_, "inbox_dedup.on_event")

    @saga_step(SOURCE, "dedup_happened", attempts=2, backoff=0.1)
    def also_on_event(self, envelope_):
        handle(self, envelope_, "inbox_dedup.also_on_event")


class ConcurrentProbe(ServiceBase):
    name = "inbox_concurrent"
    db = Database()
    context = ContextSpy()

    @saga_step(SOURCE, "concurrent_happened", attempts=2, backoff=0.1)
    def on_event(self, envelope_):
        handle(self, envelope_, "inbox_concurrent.on_event", hold=0.5)


class FlakyProbe(ServiceBase):
    """Policy from the container config (see the flaky_config fixture)."""

    name = "inbox_flaky"
    db = Database()
    context = ContextSpy()

    @saga_step(SOURCE, "flaky_happened")
    def on_event(self, envelope_):
        handle(self, envelope_, "inbox_flaky.on_event")


class DoomedProbe(ServiceBase):
    name = "inbox_doomed"
    db = Database()
    context = ContextSpy()

    @saga_step(SOURCE, "doomed_happened", attempts=3, backoff=0.1)
    def on_event(self, envelope_):
        handle(self, envelope_, "inbox_doomed.on_event")


class RedeclareProbe(ServiceBase):
    name = "inbox_redeclare"
    db = Database()
    context = ContextSpy()

    @saga_step(SOURCE, "redeclare_happened", attempts=2, backoff=0.1)
    def on_event(self, envelope_):
        handle(self, envelope_, "inbox_redeclare.on_event")


def handler_queue(event_type, service, method="on_event"):
    return handler_queue_name(service, method, SOURCE, event_type, queue_settings())


@pytest.fixture(scope="module")
def probe_db_url(integration_env):
    name = f"ft_{RUN_ID}_int_inbox"
    with closing(_admin_connection()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = make_url(_admin_db_url()).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=2)
    metadata.create_all(engine)
    engine.dispose()
    yield url
    with closing(_admin_connection()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def probe_db(probe_db_url, monkeypatch):
    for probe in (DedupProbe, ConcurrentProbe, FlakyProbe, DoomedProbe, RedeclareProbe):
        monkeypatch.setenv(f"{probe.name.upper()}_DATABASE_URL", probe_db_url)
    engine = make_engine(probe_db_url, pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture
def broker(config):
    conn = Connection(config["AMQP_URI"], transport_options={"confirm_publish": True})
    yield conn
    conn.release()


@pytest.fixture
def publish(publish_event):
    """Publish an envelope the way an outbox relay does (confirmed, with headers)."""
    return lambda message, correlation_id=None: publish_event(SOURCE, message, correlation_id)


def event(event_type, **payload):
    return envelope(event_type, payload, correlation_id="it-inbox")


def finished(event_id):
    """The calls for an event that have returned or raised."""
    return [call for call in CALLS.get(event_id, []) if "ended" in call]


def effect_count(engine, event_id, handler=None):
    query = select(func.count()).select_from(effects).where(effects.c.event_id == event_id)
    if handler:
        query = query.where(effects.c.handler == handler)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def inbox_rows(engine, event_id):
    with engine.connect() as conn:
        return conn.execute(
            select(inbox.c.handler, inbox.c.event_type).where(inbox.c.event_id == event_id)
        ).all()


def ready_messages(broker, queue_name):
    """Ready messages in a queue (raises if the queue does not exist)."""
    channel = broker.channel()
    try:
        return Queue(queue_name)(channel).queue_declare(passive=True).message_count
    finally:
        channel.close()


def dlq(config, *args):
    env = dict(os.environ, AMQP_URI=config["AMQP_URI"])
    return subprocess.run(
        [sys.executable, "-m", "shared.dlq", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def parked_list(config, service):
    result = dlq(config, "list", service, "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# -- the inbox ---------------------------------------------------------------


def test_duplicate_deliveries_have_one_effect_per_handler(
    container_factory, config, probe_db, publish
):
    container_factory(DedupProbe, config).start()
    message = event("dedup_happened", n=1)
    for _ in range(3):
        publish(message)
    wait_for(lambda: len(finished(message["event_id"])) == 6)

    calls = CALLS[message["event_id"]]
    for handler in ("inbox_dedup.on_event", "inbox_dedup.also_on_event"):
        claims = [call["claimed"] for call in calls if call["handler"] == handler]
        assert sorted(claims) == [False, False, True]
        assert effect_count(probe_db, message["event_id"], handler) == 1
    assert sorted(inbox_rows(probe_db, message["event_id"])) == [
        ("inbox_dedup.also_on_event", "dedup_happened"),
        ("inbox_dedup.on_event", "dedup_happened"),
    ]


def test_concurrent_duplicates_in_two_instances_have_one_effect(
    container_factory, config, probe_db, publish
):
    # Two instances share the handler's queue; the broker hands one copy to each.
    container_factory(ConcurrentProbe, config).start()
    container_factory(ConcurrentProbe, config).start()
    message = event("concurrent_happened", n=1)
    publish(message)
    publish(message)
    wait_for(lambda: len(finished(message["event_id"])) == 2)

    first, second = sorted(CALLS[message["event_id"]], key=lambda call: call["started"])
    # They overlapped: the second claim ran while the first was uncommitted.
    assert second["started"] < first["ended"]
    assert sorted([first["claimed"], second["claimed"]]) == [False, True]
    # The loser waited for the winner's commit instead of inserting beside it.
    loser = first if not first["claimed"] else second
    winner = second if loser is first else first
    assert loser["ended"] >= winner["ended"] - 0.05
    assert effect_count(probe_db, message["event_id"]) == 1
    assert len(inbox_rows(probe_db, message["event_id"])) == 1


@pytest.mark.parametrize("winner_commits", [True, False])
def test_a_claim_waits_for_a_concurrent_uncommitted_claim(probe_db, winner_commits):
    message = event("race_happened")
    first = Session(probe_db)
    assert claim(first, message, "race.handler") is True  # uncommitted

    def second_claim():
        with Session(probe_db) as session, session.begin():
            return claim(session, message, "race.handler")

    racer = eventlet.spawn(second_claim)
    eventlet.sleep(0.3)
    assert not racer.dead, "the second claim must wait for the first transaction"
    if winner_commits:
        first.commit()
    else:
        first.rollback()
    first.close()
    # Commit: the second sees the row and claims nothing. Rollback: it claims.
    assert racer.wait() is (not winner_commits)
    assert len(inbox_rows(probe_db, message["event_id"])) == 1


# -- retries -----------------------------------------------------------------


@pytest.fixture
def flaky_config(config):
    return dict(config, EVENT_RETRY_ATTEMPTS=4, EVENT_RETRY_BACKOFF_SECONDS=0.2)


def test_a_handler_that_fails_twice_is_retried_with_backoff_and_succeeds_once(
    container_factory, flaky_config, probe_db, publish, broker
):
    container = container_factory(FlakyProbe, flaky_config)
    container.start()
    queue = handler_queue("flaky_happened", "inbox_flaky")
    message = event("flaky_happened", n=1)
    FAULTS[message["event_id"]] = 2
    publish(message, correlation_id="cid-flaky")
    wait_for(lambda: effect_count(probe_db, message["event_id"]) == 1)
    eventlet.sleep(0.3)  # room for a wrong extra delivery to show up

    calls = CALLS[message["event_id"]]
    assert len(calls) == 3
    # The failed attempts rolled back their claim with their effect.
    assert [call["claimed"] for call in calls] == [True, True, True]
    assert effect_count(probe_db, message["event_id"]) == 1
    # Backoff from the config: 0.2 s, then 0.4 s (never shorter).
    gaps = [later["started"] - earlier["ended"] for earlier, later in pairwise(calls)]
    assert 0.18 <= gaps[0] < 2.0, gaps
    assert 0.38 <= gaps[1] < 2.5, gaps
    # The correlation id travelled with every retry; no broker or retry
    # headers leaked into the context data (nameko would send them on).
    assert {call["correlation_id"] for call in calls} == {"cid-flaky"}
    for call in calls:
        assert not [key for key in call["context_keys"] if key.startswith("x-")], call

    # One retry queue per backoff step, and nothing left anywhere once the
    # consumer is gone (an unacked original would be back in its queue).
    container.stop()
    for delay_ms in (200, 400, 800):
        assert ready_messages(broker, retry_queue_name(queue, delay_ms)) == 0
    assert ready_messages(broker, queue) == 0
    assert ready_messages(broker, dead_letter_queue_name("inbox_flaky")) == 0


def test_a_deleted_retry_queue_is_declared_again_and_the_event_is_not_lost(
    container_factory, config, probe_db, publish, broker
):
    container_factory(RedeclareProbe, config).start()
    queue = handler_queue("redeclare_happened", "inbox_redeclare")
    channel = broker.channel()
    channel.queue_delete(retry_queue_name(queue, 100))  # an operator's mistake
    channel.close()
    message = event("redeclare_happened", n=1)
    FAULTS[message["event_id"]] = 1
    publish(message)
    wait_for(lambda: effect_count(probe_db, message["event_id"]) == 1)
    assert len(CALLS[message["event_id"]]) == 2
    assert ready_messages(broker, retry_queue_name(queue, 100)) == 0


# -- the dead-letter queue ---------------------------------------------------


def test_a_handler_that_always_fails_is_parked_listed_and_replayed(
    container_factory, config, probe_db, publish, broker, caplog
):
    caplog.set_level(logging.ERROR, logger="shared.event_handlers")
    container_factory(DoomedProbe, config).start()
    service = "inbox_doomed"
    parking = dead_letter_queue_name(service)
    queue = handler_queue("doomed_happened", service)
    message = event("doomed_happened", n=1)
    FAULTS[message["event_id"]] = -1
    publish(message, correlation_id="cid-doomed")
    wait_for(lambda: ready_messages(broker, parking) == 1)

    assert len(CALLS[message["event_id"]]) == 3  # attempts=3, then parked
    assert effect_count(probe_db, message["event_id"]) == 0
    assert inbox_rows(probe_db, message["event_id"]) == []
    [record] = [r for r in caplog.records if getattr(r, "event_id", None) == message["event_id"]]
    assert record.levelno == logging.ERROR
    assert record.correlation_id == "cid-doomed"
    assert parking in record.getMessage()

    # The parked message: its body untouched, its story in the headers.
    channel = broker.channel()
    peeked = Queue(parking)(channel).get(no_ack=False)
    assert json.loads(peeked.body) == message
    headers = peeked.headers
    assert headers[ATTEMPTS] == 3
    assert headers[ORIGINAL_QUEUE] == queue
    assert headers[EXCEPTION_TYPE] == "RuntimeError"
    assert headers["x-exception-message"] == "injected fault"
    assert headers["nameko.correlation_id"] == "cid-doomed"
    assert "x-death" not in headers
    datetime.fromisoformat(headers[PARKED_AT])
    peeked.requeue()
    channel.close()

    # list shows it and leaves it parked.
    [listed] = parked_list(config, service)
    assert listed["event_id"] == message["event_id"]
    assert listed["event_type"] == "doomed_happened"
    assert listed["original_queue"] == queue
    assert listed["error_type"] == "RuntimeError"
    assert listed["error_message"] == "injected fault"
    assert listed["attempts"] == 3
    assert listed["correlation_id"] == "cid-doomed"
    assert listed["handler"] == "inbox_doomed.on_event"
    datetime.fromisoformat(listed["parked_at"])
    table = dlq(config, "list", service)
    assert table.returncode == 0
    assert message["event_id"] in table.stdout
    assert "RuntimeError: injected fault" in table.stdout
    assert ready_messages(broker, parking) == 1

    # Fix the fault, replay: processed once, and gone from the parking queue.
    FAULTS[message["event_id"]] = 0
    replayed = dlq(config, "replay", service, "--event-id", message["event_id"])
    assert replayed.returncode == 0, replayed.stderr
    wait_for(lambda: effect_count(probe_db, message["event_id"]) == 1)
    assert len(CALLS[message["event_id"]]) == 4
    assert CALLS[message["event_id"]][-1]["correlation_id"] == "cid-doomed"
    assert ready_messages(broker, parking) == 0
    assert parked_list(config, service) == []


def test_a_replay_resets_the_attempts_and_purge_removes_one_event(
    container_factory, config, probe_db, publish, broker
):
    container_factory(DoomedProbe, config).start()
    service = "inbox_doomed"
    parking = dead_letter_queue_name(service)
    stubborn, other = event("doomed_happened", n=2), event("doomed_happened", n=3)
    for message in (stubborn, other):
        FAULTS[message["event_id"]] = -1
        publish(message)
    wait_for(lambda: ready_messages(broker, parking) == 2)

    # Replayed without a fix: three fresh attempts (not one), parked again.
    result = dlq(config, "replay", service, "--event-id", stubborn["event_id"])
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(CALLS[stubborn["event_id"]]) == 6)
    wait_for(lambda: ready_messages(broker, parking) == 2)
    again = {item["event_id"]: item for item in parked_list(config, service)}
    assert again[stubborn["event_id"]]["attempts"] == 3
    assert again[stubborn["event_id"]]["replayed_at"] is not None
    assert again[other["event_id"]]["replayed_at"] is None
    assert len(CALLS[other["event_id"]]) == 3

    # purge needs an event id, and removes only that event.
    assert dlq(config, "purge", service).returncode == 2
    missing = dlq(config, "purge", service, "--event-id", str(uuid.uuid4()))
    assert missing.returncode == 1
    purged = dlq(config, "purge", service, "--event-id", stubborn["event_id"])
    assert purged.returncode == 0, purged.stderr
    assert [item["event_id"] for item in parked_list(config, service)] == [other["event_id"]]

    # replay --all after the fix.
    FAULTS[other["event_id"]] = 0
    result = dlq(config, "replay", service, "--all")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: effect_count(probe_db, other["event_id"]) == 1)
    assert effect_count(probe_db, stubborn["event_id"]) == 0
    assert ready_messages(broker, parking) == 0


def test_an_event_older_than_the_inbox_retention_is_replayed_only_when_forced(
    container_factory, config, probe_db, publish, broker
):
    """Its id may be gone from the inbox (shared.housekeeping): if a copy was
    handled once, a replay would apply it twice. A person decides."""
    container_factory(DoomedProbe, config).start()
    service = "inbox_doomed"
    parking = dead_letter_queue_name(service)
    message = event("doomed_happened", n=4)
    message["occurred_at"] = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    FAULTS[message["event_id"]] = -1
    publish(message)
    wait_for(lambda: ready_messages(broker, parking) == 1)
    FAULTS[message["event_id"]] = 0

    refused = dlq(config, "replay", service, "--event-id", message["event_id"])
    assert refused.returncode == 1
    assert "older than the inbox retention (30 days)" in refused.stderr
    assert ready_messages(broker, parking) == 1
    assert effect_count(probe_db, message["event_id"]) == 0

    forced = dlq(config, "replay", service, "--event-id", message["event_id"], "--force")
    assert forced.returncode == 0, forced.stderr
    wait_for(lambda: effect_count(probe_db, message["event_id"]) == 1)
    assert ready_messages(broker, parking) == 0


def test_the_cli_refuses_an_unknown_service(config):
    result = dlq(config, "list", f"nosuch{uuid.uuid4().hex[:6]}")
    assert result.returncode == 1
    assert "dead-letters" in result.stderr

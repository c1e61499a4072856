"""The outbox publishes exactly what committed; the database never blocks the hub."""

import json
import time
import uuid

import eventlet
import pytest
from sqlalchemy import text

from services.auth.service import AuthService
from shared import contracts
from shared.database import Database, make_engine
from shared.errors import Conflict, Unavailable
from shared.outbox import record_event
from shared.rpc import cluster_rpc
from shared.rpc import rpc as rpc_entrypoint
from shared.service import ServiceBase


def test_an_event_is_published_once_with_its_envelope_after_commit(
    container_factory, config, rpc, event_tap, sql
):
    next_event = event_tap("auth", contracts.USER_REGISTERED)
    container_factory(AuthService, config).start()
    email = f"outbox-{uuid.uuid4().hex[:8]}@example.com"
    user = rpc.auth.register(email, "correct horse battery", "Outbox")
    message = next_event(of_type=contracts.USER_REGISTERED)
    envelope = message.payload
    assert set(envelope) == {
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "causation_id",
        "payload",
    }
    assert envelope["payload"] == {
        "user_id": user["user_id"],
        "email": email,
        "full_name": "Outbox",
    }
    assert envelope["correlation_id"] == "it-test"
    # A failed (rolled back) registration publishes nothing.
    with pytest.raises(Conflict):
        rpc.auth.register(email, "correct horse battery", "Outbox")
    assert next_event(timeout=1.0, of_type=contracts.USER_REGISTERED) is None
    assert marked_published(sql, envelope["event_id"])


def marked_published(sql, event_id, timeout=2.0) -> bool:
    """The relay marks confirmed rows a few at a time, shortly after publishing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(published_at,)] = sql(
            "auth", "SELECT published_at FROM outbox WHERE event_id = :id", id=event_id
        )
        if published_at is not None:
            return True
        time.sleep(0.05)
    return False


def test_events_left_pending_by_a_crash_are_published_when_the_service_starts(
    container_factory, config, integration_env, event_tap, sql
):
    """Commit happened, the process died before publishing: nothing is lost."""
    next_event = event_tap("auth", contracts.SESSION_REVOKED)
    engine = make_engine(integration_env.database_urls["auth"], pool_size=1)
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        staged = record_event(
            session,
            contracts.SESSION_REVOKED,
            {
                "session_id": "crash-test",
                "user_id": "u",
                "reason": "test",
                "revoked_at": "2026-01-01T00:00:00+00:00",
            },
        )
    engine.dispose()
    assert next_event(timeout=1.0) is None  # no relay running: still pending

    container_factory(AuthService, config).start()
    message = next_event(timeout=10.0, of_type=contracts.SESSION_REVOKED)
    assert message is not None and message.payload["event_id"] == staged["event_id"]
    assert marked_published(sql, staged["event_id"])


class DbProbe(ServiceBase):
    """A minimal service over the auth test database, to exercise Database."""

    name = "dbprobe"
    db = Database()

    @rpc_entrypoint
    def sleep(self, seconds):
        with self.db.commit_on_exit() as session:
            session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        return True

    @rpc_entrypoint
    def insert_then_fail(self, marker):
        with self.db.commit_on_exit() as session:
            session.execute(text("INSERT INTO probe_rows (marker) VALUES (:m)"), {"m": marker})
            raise Conflict("deliberate", "rolled back")

    @rpc_entrypoint
    def insert(self, marker):
        with self.db.commit_on_exit() as session:
            session.execute(text("INSERT INTO probe_rows (marker) VALUES (:m)"), {"m": marker})


@pytest.fixture
def dbprobe(container_factory, config, integration_env, monkeypatch, sql):
    monkeypatch.setenv("DBPROBE_DATABASE_URL", integration_env.database_urls["auth"])
    sql("auth", "CREATE TABLE IF NOT EXISTS probe_rows (marker TEXT)")
    container = container_factory(DbProbe, config)
    container.start()
    return container


def test_slow_queries_do_not_stall_other_workers(dbprobe, config):
    def call(_):
        with cluster_rpc(config, timeout=20) as rpc:
            return rpc.dbprobe.sleep(1)

    started = time.monotonic()
    assert list(eventlet.GreenPool(4).imap(call, range(4))) == [True] * 4
    elapsed = time.monotonic() - started
    # Four one-second queries in parallel: about one second if the hub is
    # free, four if psycopg2 blocked it.
    assert elapsed < 2.5, elapsed


def test_a_transaction_commits_on_success_and_rolls_back_on_error(dbprobe, rpc, sql):
    marker = uuid.uuid4().hex
    with pytest.raises(Conflict):
        rpc.dbprobe.insert_then_fail(marker)
    assert sql("auth", "SELECT count(*) FROM probe_rows WHERE marker = :m", m=marker) == [(0,)]
    rpc.dbprobe.insert(marker)
    assert sql("auth", "SELECT count(*) FROM probe_rows WHERE marker = :m", m=marker) == [(1,)]
    assert rpc.dbprobe.health() == {"service": "dbprobe", "status": "ok"}


def test_a_database_connection_cut_mid_call_is_unavailable_not_a_remote_error(
    dbprobe, config, rpc, sql
):
    """The caller gets Unavailable (the gateway's 503 with Retry-After), and
    the next call works on a fresh connection."""
    with cluster_rpc(config, timeout=20) as client:
        pending = client.dbprobe.sleep.call_async(10)
        cut = []
        deadline = time.monotonic() + 5
        while not cut and time.monotonic() < deadline:
            eventlet.sleep(0.1)
            cut = sql(
                "auth",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE wait_event = 'PgSleep' AND datname = current_database()",
            )
        assert cut, "the call's query was not seen running"
        with pytest.raises(Unavailable) as refused:
            pending.result()
    assert refused.value.code == "database_unavailable"
    assert rpc.dbprobe.health() == {"service": "dbprobe", "status": "ok"}


def test_outbox_rows_are_json_and_carry_the_correlation_header(container_factory, config, rpc, sql):
    container_factory(AuthService, config).start()
    user = rpc.auth.register(
        f"hdr-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery", "Header"
    )
    rows = sql(
        "auth",
        "SELECT body, headers FROM outbox WHERE event_type = :t ORDER BY id DESC LIMIT 1",
        t=contracts.USER_REGISTERED,
    )
    body, headers = (json.loads(value) for value in rows[0])
    assert body["payload"]["user_id"] == user["user_id"]
    assert headers == {"nameko.correlation_id": "it-test"}

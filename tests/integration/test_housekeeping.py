"""Housekeeping on PostgreSQL and SQLite: what is deleted, what is kept, and that
every service runs it (shared.housekeeping)."""

import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from shared.database import Database, make_engine
from shared.housekeeping import Retention, housekeep, prune, tables_of
from shared.migrate import upgrade
from shared.service import ServiceBase
from tests.conftest import RUN_ID, _admin_connection, _admin_db_url
from tests.integration.helpers import wait_for

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=["postgresql", "sqlite"])
def risk_db(request, tmp_path):
    """A fresh database with risk's migrations (it has both an outbox and an
    inbox), on PostgreSQL and on the embedded SQLite."""
    name = f"hk_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / name}.sqlite3"
    else:
        with closing(_admin_connection()) as admin, admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        url = make_url(_admin_db_url()).set(database=name).render_as_string(hide_password=False)
    upgrade("risk", url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()
    if request.param == "postgresql":
        with closing(_admin_connection()) as admin, admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_outbox(engine, created_at, published_at) -> str:
    event_id = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox (event_id, event_type, body, headers, created_at,"
                " published_at, attempts) VALUES (:id, 'probe', '{}', '{}', :c, :p, 0)"
            ),
            {"id": event_id, "c": created_at, "p": published_at},
        )
    return event_id


def add_inbox(engine, handled_at, handlers=("risk.one",)) -> str:
    event_id = str(uuid.uuid4())
    with engine.begin() as connection:
        for handler in handlers:
            connection.execute(
                text(
                    "INSERT INTO inbox (event_id, handler, event_type, handled_at)"
                    " VALUES (:id, :h, 'probe', :at)"
                ),
                {"id": event_id, "h": handler, "at": handled_at},
            )
    return event_id


def ids(engine, table) -> set[str]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text(f"SELECT event_id FROM {table}"))}


def test_published_rows_past_retention_and_old_inbox_ids_go_pending_rows_never(risk_db):
    _, engine = risk_db
    old_published = [add_outbox(engine, NOW - 9 * DAY, NOW - 8 * DAY) for _ in range(3)]
    recent = add_outbox(engine, NOW - 2 * DAY, NOW - 2 * DAY)
    pending = add_outbox(engine, NOW - 60 * DAY, None)  # never published: kept, however old
    old_ids = [add_inbox(engine, NOW - 31 * DAY, ("risk.one", "risk.two")) for _ in range(3)]
    young_id = add_inbox(engine, NOW - 29 * DAY)

    assert tables_of(engine) == ("outbox", "inbox")
    deleted = housekeep(engine, Retention(outbox=7 * DAY, inbox=30 * DAY), NOW)

    assert deleted == {"outbox": 3, "inbox": 6}
    assert ids(engine, "outbox") == {recent, pending}
    assert ids(engine, "inbox") == {young_id}
    assert not set(old_published) & ids(engine, "outbox")
    assert not set(old_ids) & ids(engine, "inbox")
    assert housekeep(engine, Retention(outbox=7 * DAY, inbox=30 * DAY), NOW) == {
        "outbox": 0,
        "inbox": 0,
    }


def test_deletes_go_in_batches_until_nothing_is_left(risk_db):
    _, engine = risk_db
    for _ in range(5):
        add_outbox(engine, NOW - 9 * DAY, NOW - 9 * DAY)
    assert prune(engine, "outbox", NOW - 7 * DAY, batch=2) == 5
    assert ids(engine, "outbox") == set()


class Probe(ServiceBase):
    """Any service: housekeeping comes with ServiceBase."""

    name = "hkprobe"
    db = Database()


def test_every_service_runs_housekeeping_on_its_database(
    risk_db, container_factory, config, monkeypatch
):
    url, engine = risk_db
    monkeypatch.setenv("HKPROBE_DATABASE_URL", url)
    monkeypatch.setenv("HOUSEKEEPING_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("OUTBOX_RETENTION_HOURS", "1")
    monkeypatch.setenv("INBOX_RETENTION_DAYS", "1")
    stale = add_outbox(engine, NOW - 3 * DAY, NOW - 3 * DAY)
    kept = add_outbox(engine, NOW, NOW)
    add_inbox(engine, NOW - 2 * DAY)
    young = add_inbox(engine, NOW)

    container_factory(Probe, config).start()

    wait_for(lambda: stale not in ids(engine, "outbox"), timeout=15, what="the stale row deleted")
    wait_for(lambda: ids(engine, "inbox") == {young}, timeout=15, what="the old id deleted")
    assert kept in ids(engine, "outbox")

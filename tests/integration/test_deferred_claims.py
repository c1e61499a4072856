"""Claims without a round trip (shared.database.claims_deferred) on the real PostgreSQL.

A saga step's inbox claim travels with the step's first read instead of
being a round trip of its own; the price is that a duplicate is found at
the key instead of by asking, and the step runs again claiming first. These
tests check the two things that matter: a step costs one message less, and
every duplicate (one after the other, or two at once) still has its effect
exactly once.
"""

import eventlet
import pytest
from sqlalchemy import MetaData, exc, select, text
from sqlalchemy.orm import sessionmaker

from shared.database import (
    UnitOfWork,
    claim_once,
    claims_deferred,
    connection_of,
    defer,
    make_engine,
)
from shared.events import envelope
from shared.inbox import claim, handle_once, inbox_table
from tests.integration.test_pipelining import CountingConnection, counting_engine, ids, rows

inbox = inbox_table(MetaData())


def _create(engine):
    with engine.begin() as conn:
        for table in (rows, inbox):
            table.drop(conn, checkfirst=True)
            table.create(conn)


def _drop(engine):
    with engine.begin() as conn:
        for table in (rows, inbox):
            table.drop(conn, checkfirst=True)


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["auth"], pool_size=4)
    _create(engine)
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    _drop(engine)
    engine.dispose()


@pytest.fixture
def counting_uow(integration_env):
    engine = counting_engine(integration_env)
    _create(engine)
    yield UnitOfWork(sessionmaker(engine))
    _drop(engine)
    engine.dispose()


def effect(note: str):
    """A step's effect: read what it decides on, then write."""

    def run(session):
        taken = connection_of(session).execute(select(rows.c.id).order_by(rows.c.id.desc()))
        next_id = (taken.scalars().first() or 0) + 1
        defer(session, rows.insert(), {"id": next_id, "note": note})
        return next_id

    return run


def handled(uow) -> int:
    with uow.read() as conn:
        return conn.execute(text("SELECT count(*) FROM inbox")).scalar()


def test_a_step_with_a_deferred_claim_costs_two_messages(counting_uow):
    """BEGIN + claim + the read, the writes + COMMIT (once prepared)."""
    handle_once(counting_uow, envelope("e", {}, correlation_id=None), "h", effect("warm"))
    CountingConnection.sent = 0
    message = envelope("e", {}, correlation_id=None)
    assert handle_once(counting_uow, message, "h", effect("counted")) == 2
    assert CountingConnection.sent == 2


def test_a_duplicate_delivery_has_its_effect_once(uow):
    message = envelope("funds_reserved", {}, correlation_id=None)
    assert handle_once(uow, message, "svc.step", effect("first")) == 1
    assert handle_once(uow, message, "svc.step", effect("again")) is None
    assert handle_once(uow, message, "svc.other_step", effect("other handler")) == 2
    assert ids(uow) == [1, 2]
    assert handled(uow) == 2


def test_two_deliveries_at_once_have_the_effect_once(uow):
    """The second claim waits on the first's uncommitted row, fails on the
    key, and runs again claiming first: it finds the event handled."""
    message = envelope("funds_reserved", {}, correlation_id=None)
    results = []

    def slow_effect(session):
        session.execute(text("SELECT pg_sleep(0.2)"))
        return effect("once")(session)

    pool = eventlet.GreenPool()
    for _ in range(2):
        pool.spawn(lambda: results.append(handle_once(uow, message, "svc.step", slow_effect)))
    pool.waitall()
    assert sorted(results, key=str) == [1, None]
    assert ids(uow) == [1]
    assert handled(uow) == 1


def test_a_use_case_reads_a_duplicate_as_one_when_it_runs_again(uow):
    runs = []

    @claims_deferred
    def use_case(message):
        with uow.commit_on_exit() as session:
            new = claim(session, message, "svc.use_case")
            runs.append(new)
            if new:
                defer(session, rows.insert(), {"id": len(runs), "note": "effect"})
        return new

    message = envelope("e", {}, correlation_id=None)
    assert use_case(message) is True
    assert use_case(message) is False
    # The duplicate's first run assumed it new (and was rolled back); its second asked.
    assert runs == [True, True, False]
    assert ids(uow) == [1]


def test_a_conflict_elsewhere_is_an_error_not_a_duplicate(uow):
    """Only a conflict on a table a claim was deferred to runs the use case again."""
    runs = []

    @claims_deferred
    def use_case(message):
        runs.append(message["event_id"])
        with uow.commit_on_exit() as session:
            claim(session, message, "svc.use_case")
            defer(session, rows.insert(), {"id": 1, "note": "always the same key"})

    use_case(envelope("e", {}, correlation_id=None))
    with pytest.raises(exc.IntegrityError):
        use_case(envelope("e", {}, correlation_id=None))
    assert len(runs) == 2
    assert handled(uow) == 1


def test_outside_a_deferring_use_case_a_claim_answers_at_once(uow):
    message = envelope("e", {}, correlation_id=None)
    values = {"event_id": message["event_id"], "handler": "h", "event_type": "e"}
    with uow.commit_on_exit() as session:
        assert claim_once(session, inbox, {**values, "handled_at": _now(session)}) is True
    with uow.commit_on_exit() as session:
        assert claim_once(session, inbox, {**values, "handled_at": _now(session)}) is False


def _now(session):
    return connection_of(session).execute(text("SELECT now()")).scalar()

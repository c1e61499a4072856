"""PostgreSQL transactions in fewer round trips keep every transactional guarantee.

shared/pipelining.py sends BEGIN with the first statement and deferred
writes with the next statement or the COMMIT. These tests run on the real
PostgreSQL and check that what the code means is what happens: atomicity,
order, errors, savepoints, isolation of reads, a clean pooled connection,
and the number of messages a saga step costs.
"""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import eventlet
import psycopg2.extensions
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    exc,
    select,
    text,
)
from sqlalchemy.orm import sessionmaker

from services.transactions import handlers
from services.transactions.directory import AccountDirectory
from shared import pipelining
from shared.database import (
    UnitOfWork,
    advisory_lock,
    connection_of,
    defer,
    make_engine,
    query,
)
from shared.sqltypes import UtcDateTime

metadata = MetaData()
rows = Table(
    "pipelining_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("note", String(50)),
)


class CountingCursor(psycopg2.extensions.cursor):
    def execute(self, *args, **kwargs):
        CountingConnection.sent += 1
        return super().execute(*args, **kwargs)


class CountingConnection(pipelining.PipelinedConnection):
    """Counts the messages (query strings) sent to the server."""

    sent = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cursor_factory = CountingCursor


@pytest.fixture
def engine(integration_env):
    url = integration_env.database_urls["auth"]
    engine = make_engine(url, pool_size=2)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
    yield engine
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()


@pytest.fixture
def uow(engine):
    return UnitOfWork(sessionmaker(engine, expire_on_commit=False))


def ids(uow) -> list[int]:
    with uow.read() as conn:
        return conn.execute(select(rows.c.id).order_by(rows.c.id)).scalars().all()


def test_deferred_writes_are_seen_by_later_reads_and_commit_together(uow):
    with uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 1, "note": "100% it's"})
        defer(session, rows.insert().values(id=2, note="b"))
        count = session.execute(text("SELECT count(*) FROM pipelining_rows")).scalar()
        defer(session, rows.update().where(rows.c.id == 2).values(note="changed"))
    assert count == 2
    with uow.read() as conn:
        assert conn.execute(select(rows.c.id, rows.c.note).order_by(rows.c.id)).all() == [
            (1, "100% it's"),
            (2, "changed"),
        ]


def test_a_failing_deferred_write_rolls_the_whole_transaction_back(uow):
    with uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 1, "note": "first"})
    with pytest.raises(exc.IntegrityError), uow.commit_on_exit() as session:
        session.execute(rows.insert(), {"id": 3, "note": "sent at once"})
        defer(session, rows.insert(), {"id": 4, "note": "deferred"})
        defer(session, rows.insert(), {"id": 1, "note": "duplicate"})
    assert ids(uow) == [1]


def test_a_savepoint_rolled_back_drops_the_writes_deferred_after_it(uow):
    with uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 1, "note": "kept"})
        with pytest.raises(exc.IntegrityError), session.begin_nested():
            defer(session, rows.insert(), {"id": 2, "note": "dropped"})
            session.execute(rows.insert(), {"id": 1, "note": "duplicate"})
        defer(session, rows.insert(), {"id": 3, "note": "kept too"})
    assert ids(uow) == [1, 3]


def test_an_error_in_the_block_leaves_nothing_and_a_clean_pooled_connection(uow, engine):
    with pytest.raises(RuntimeError), uow.commit_on_exit() as session:
        session.execute(rows.insert(), {"id": 1, "note": "sent"})
        defer(session, rows.insert(), {"id": 2, "note": "queued"})
        raise RuntimeError("the handler failed")
    assert ids(uow) == []
    raw = engine.raw_connection()
    try:
        assert raw.dbapi_connection.get_transaction_status() == 0  # idle: nothing left open
    finally:
        raw.close()


def test_reads_run_outside_a_transaction(uow):
    with uow.read() as conn:
        assert conn.execute(text("SELECT now() = statement_timestamp()")).scalar() is True


def test_advisory_locks_taken_with_the_next_statement_still_serialise(uow):
    finished = []

    def step(name):
        with uow.commit_on_exit() as session:
            advisory_lock(session, "pipelining-test")
            session.execute(text("SELECT pg_sleep(0.3)"))
            finished.append(name)

    started = eventlet.hubs.get_hub().clock()
    pool = eventlet.GreenPool()
    for name in ("a", "b"):
        pool.spawn(step, name)
    pool.waitall()
    assert eventlet.hubs.get_hub().clock() - started >= 0.6


def counting_engine(integration_env):
    """An engine on the pipelined dialect whose one connection counts its messages."""
    return create_engine(
        integration_env.database_urls["auth"].replace(
            "postgresql://", f"postgresql+{pipelining.DRIVER}://", 1
        ),
        connect_args={"connection_factory": CountingConnection},
        pool_size=1,
    )


@pytest.fixture
def counting_uow(integration_env):
    engine = counting_engine(integration_env)
    with engine.begin() as conn:
        metadata.create_all(conn)
    yield UnitOfWork(sessionmaker(engine))
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()


def saga_step(uow, claim_id: int) -> None:
    with uow.commit_on_exit() as session:
        advisory_lock(session, "step")
        session.execute(rows.insert(), {"id": claim_id, "note": "claim"})
        session.execute(select(rows.c.note).where(rows.c.id == claim_id)).scalar_one()
        defer(session, rows.insert(), {"id": claim_id + 1, "note": "effect"})
        defer(session, rows.update().where(rows.c.id == claim_id).values(note="done"))


def test_a_saga_step_costs_three_messages(counting_uow):
    """BEGIN + lock + claim, the read, the writes + COMMIT: three round trips
    (once its statements are prepared: the connection's first use of a
    statement is followed by its PREPARE)."""
    saga_step(counting_uow, 10)
    CountingConnection.sent = 0
    saga_step(counting_uow, 20)
    assert CountingConnection.sent == 3
    assert ids(counting_uow) == [10, 11, 20, 21]


def test_statements_are_prepared_once_per_connection_and_executed(counting_uow):
    for n in range(3):
        saga_step(counting_uow, 10 * (n + 1))
    with counting_uow.commit_on_exit() as session:
        prepared = (
            session.execute(
                text("SELECT statement FROM pg_prepared_statements WHERE name LIKE 'fintech_%'")
            )
            .scalars()
            .all()
        )
    assert any("INSERT INTO pipelining_rows" in statement for statement in prepared)
    assert any("SELECT pipelining_rows.note" in statement for statement in prepared)
    assert ids(counting_uow) == [10, 11, 20, 21, 30, 31]


def test_a_statement_postgresql_cannot_prepare_is_sent_as_it_is(counting_uow):
    # $1 alone has no type PostgreSQL could infer: PREPARE refuses it.
    for _ in range(3):
        with counting_uow.commit_on_exit() as session:
            value = session.execute(text("SELECT :value AS echoed"), {"value": "50%"}).scalar()
        assert value == "50%"


stamped = Table(
    "pipelining_stamped",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("amount", Numeric(12, 2)),
)
_STAMPED = select(stamped.c.id, stamped.c.at, stamped.c.amount).where(
    stamped.c.id >= bindparam("from_id")
)


def test_query_reads_after_the_queued_writes_in_one_message_with_sqlalchemys_conversions(
    counting_uow,
):
    at = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
    with counting_uow.commit_on_exit() as session:
        defer(session, stamped.insert(), {"id": 1, "at": at, "amount": Decimal("1.50")})
        CountingConnection.sent = 0
        found = query(session, _STAMPED, {"from_id": 1})
        assert CountingConnection.sent == 1  # BEGIN, the insert and the read together
    assert found.one() == (1, at, Decimal("1.50"))
    assert found.first().at.tzinfo is UTC and found.first().amount == Decimal("1.50")
    assert found.all() == [(1, at, Decimal("1.50"))] and found.scalar() == 1
    # What SQLAlchemy's execution returns, row for row.
    with counting_uow.commit_on_exit() as session:
        assert (
            query(session, _STAMPED, {"from_id": 1})
            == session.execute(_STAMPED, {"from_id": 1}).all()
        )
        assert query(session, _STAMPED, {"from_id": 2}).first() is None
        assert query(session, text("SELECT 7 AS seven"), {}).one().seven == 7  # textual SQL
        with pytest.raises(exc.NoResultFound):
            query(session, _STAMPED, {"from_id": 2}).one()


def test_query_raises_as_sqlalchemy_and_the_transaction_rolls_back(uow):
    insert_returning = rows.insert().returning(rows.c.id)
    with uow.commit_on_exit() as session:
        assert query(session, insert_returning, {"id": 1, "note": "kept"}).scalar_one() == 1
    with pytest.raises(exc.IntegrityError) as raised, uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 2, "note": "rolled back"})
        query(session, insert_returning, {"id": 1, "note": "duplicate"})
    assert raised.value.orig.pgcode == "23505"  # what claims_deferred looks for
    assert ids(uow) == [1]


def test_query_of_a_statement_the_driver_path_cannot_take_goes_through_sqlalchemy(uow):
    with uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 1, "note": "a"})
        defer(session, rows.insert(), {"id": 2, "note": "b"})
        expanding = select(rows.c.note).where(rows.c.id.in_(bindparam("ids", expanding=True)))
        assert sorted(query(session, expanding, {"ids": [1, 2]}).all()) == [("a",), ("b",)]


def test_a_unit_of_work_makes_an_orm_session_only_when_asked_and_flushes_it(uow):
    with uow.commit_on_exit() as session:
        defer(session, rows.insert(), {"id": 1, "note": "core"})
        assert session._session is None  # Core only: no Session made
        assert session.execute(select(rows.c.note)).scalar_one() == "core"  # the ORM's execute
        assert session._session is not None
        assert session.connection() is connection_of(session)  # one connection, one transaction
    assert ids(uow) == [1]


def test_a_connection_cut_under_query_is_invalidated_and_the_next_unit_of_work_works(uow, engine):
    with pytest.raises(exc.OperationalError) as raised, uow.commit_on_exit() as session:
        backend = query(session, text("SELECT pg_backend_pid() AS pid"), {}).one().pid
        with engine.connect() as other:  # another pooled connection: this one is in use
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        query(session, _STAMPED, {"from_id": 1})
    assert raised.value.connection_invalidated  # never handed out again
    with uow.commit_on_exit() as session:
        assert query(session, text("SELECT pg_backend_pid() AS pid"), {}).one().pid != backend


def test_a_new_transfer_between_known_accounts_is_recorded_in_one_message(own_database):
    """create_transfer asks the database nothing: the key, the event, the
    snapshot, the view and the accounts' history go with the COMMIT, the
    projections listed at the position the event got."""
    engine = create_engine(
        own_database("transactions").replace(
            "postgresql://", f"postgresql+{pipelining.DRIVER}://", 1
        ),
        connect_args={"connection_factory": CountingConnection},
        pool_size=1,
    )
    uow = UnitOfWork(sessionmaker(engine))
    owner, source, target = (str(uuid.uuid4()) for _ in range(3))
    directory = AccountDirectory()
    directory.learn(
        {
            "account_id": account,
            "owner_id": owner,
            "kind": "customer",
            "currency": "EUR",
            "status": "active",
        }
        for account in (source, target)
    )

    def create(key: str) -> str:
        return handlers.create_transfer(
            uow,
            directory,
            lambda: pytest.fail("the directory knows both accounts"),
            owner,
            key,
            {
                "kind": "internal",
                "amount": 1_000,
                "currency": "EUR",
                "from_account_id": source,
                "to_account_id": target,
            },
            timedelta(minutes=1),
            datetime.now(UTC),
        )["transfer_id"]

    try:
        create(str(uuid.uuid4()))  # the connection prepares its statements after this one
        CountingConnection.sent = 0
        transfer_id = create(str(uuid.uuid4()))
        assert CountingConnection.sent == 1
        with engine.connect() as conn:
            listed = conn.execute(
                text(
                    "SELECT e.position, v.position, h.account_id, h.direction, h.position"
                    " FROM events e JOIN transfer_view v ON v.transfer_id = e.stream_id"
                    " JOIN account_history h ON h.transfer_id = e.stream_id"
                    " WHERE e.stream_id = :id ORDER BY h.direction"
                ),
                {"id": transfer_id},
            ).all()
        (position, *_), _ = listed
        assert [tuple(row) for row in listed] == [
            (position, position, target, "in", position),
            (position, position, source, "out", position),
        ]
    finally:
        engine.dispose()

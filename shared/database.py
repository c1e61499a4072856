"""A database per service: engine built in setup(), a unit of work per use.

SQLite (embedded default) and PostgreSQL (tests, production) behave the
same to the code above. Neither may block the eventlet hub for long:

- psycopg2 is made cooperative with eventlet's wait callback, so a slow
  query parks only its own worker;
- SQLite is given one connection per process, handed out by a pool whose
  waits are green under monkey patching, so workers queue for the file
  instead of spinning in SQLite's busy handler inside C.

Work happens in `with db.commit_on_exit() as session:` blocks that commit when
the block ends and roll back when it raises. The commit happens inside the
entrypoint, before an RPC reply is sent, so a failed commit is reported to
the caller instead of being lost after a success reply.
"""

import collections
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import SimpleNamespace
from typing import ParamSpec, TypeVar

from nameko.extensions import DependencyProvider
from sqlalchemy import Insert, Table, bindparam, create_engine, event, exc, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from shared import config, pipelining

log = logging.getLogger(__name__)

# Guard rails for PostgreSQL sessions: nothing waits forever on a lock, and
# a transaction left open by a bug is cut instead of pinning vacuum.
_PG_OPTIONS = (
    "-c statement_timeout=15000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000"
)


def make_engine(url: str, *, application_name: str = "fintech", pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg 3, which blocks the eventlet
        # hub; psycopg2 with eventlet's wait callback does not. Transactions
        # go out in fewer round trips (shared/pipelining.py).
        parsed = parsed.set(drivername=f"postgresql+{pipelining.DRIVER}")
        _make_psycopg2_green()
        engine = create_engine(
            parsed,
            # Error messages would otherwise quote bound values (password
            # hashes, MFA secrets) into logs and RPC error replies.
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=5,
            pool_recycle=1800,
            connect_args={"application_name": application_name, "options": _PG_OPTIONS},
            # Off behind a transaction-pooling PgBouncer (shared/pipelining.py).
            prepare=config.env_bool("DATABASE_PREPARED_STATEMENTS", True),
        )
        _ping_after_idle(engine)
        return engine
    raise config.ConfigError(f"unsupported database {parsed.get_backend_name()!r} in {url!r}")


# A pooled connection unused this long is pinged before it is handed out.
IDLE_PING_SECONDS = 10.0


def _ping_after_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for idle connections only.

    pool_pre_ping costs a round trip on every checkout; a busy connection
    proves itself with every statement, and one that breaks mid-use is
    invalidated by SQLAlchemy and its unit of work retried. A connection
    that sat idle (a database restart, a NAT timeout) is pinged first, and
    replaced if the ping fails.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as error:
            # The pool discards this connection and checks out another.
            raise exc.DisconnectionError() from error


def _sqlite_engine(url) -> Engine:
    if url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"check_same_thread": False, "timeout": 5},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _make_psycopg2_green() -> None:
    """Install eventlet's psycopg2 wait callback when the hub is in use."""
    import eventlet.patcher
    import psycopg2.extensions

    if not eventlet.patcher.is_monkey_patched("socket"):
        return  # plain threads (gateway, CLI): blocking I/O is fine there
    if psycopg2.extensions.get_wait_callback() is None:
        from eventlet.support import psycopg2_patcher

        psycopg2_patcher.make_psycopg_green()


# Session.info key: the outbox messages staged in this transaction (a list),
# handed to the commit listeners once it committed.
STAGED_EVENTS = "staged_events"
# Session.info key: what to do once this transaction has committed (a list
# of callables; `after_commit`).
_AFTER_COMMIT = "after_commit"
# Session.info key: the connection of a UnitOfWork transaction (its session
# lives for that one transaction), so hot paths need not ask the session.
_CONNECTION = "connection"


def connection_of(session: "Work | Session | Connection") -> Connection:
    """The Core connection of a unit of work's (or a session's) transaction,
    or the connection given."""
    if type(session) is Work:
        return session.connection()
    if not isinstance(session, Session):
        return session
    connection = session.info.get(_CONNECTION)
    if connection is None or session.in_nested_transaction():
        # Asking the session is what issues a nested transaction's SAVEPOINT.
        return session.connection()
    return connection


_DIALECT_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}

# Hot paths reuse statement objects built once: SQLAlchemy then finds the
# compiled SQL by a cache key memoized on the object, instead of building,
# coercing and hashing an expression tree on every call.


@functools.cache
def _insert_ignoring(dialect: str, table: Table, unique: tuple[str, ...] | None):
    insert = _DIALECT_INSERT[dialect](table)
    return insert.on_conflict_do_nothing(index_elements=list(unique) if unique else None)


def insert_ignoring(session: Session, table: Table, unique: list[str] | None = None):
    """INSERT ... ON CONFLICT DO NOTHING for this session's database (PostgreSQL,
    SQLite), on any unique key or only on the `unique` columns'; execute it
    with a row (or rows), or add `.values(...)` / `.returning(...)`. The
    statement is built once per table."""
    dialect = session.get_bind().dialect.name
    return _insert_ignoring(dialect, table, tuple(unique) if unique else None)


def insert_ignoring_duplicates(
    session: Session, table: Table, values: dict, unique: list[str] | None = None
) -> bool:
    """Insert the row unless one with its key exists; True when it was new."""
    statement = insert_ignoring(session, table, unique)
    return connection_of(session).execute(statement, values).rowcount == 1


# Claims deferred by the running `claims_deferred` use case: the tables
# they went to (None outside one; _CLAIM_FIRST while it runs again).
_deferred_claims: ContextVar[set[str] | frozenset | None] = ContextVar(
    "fintech_deferred_claims", default=None
)
_CLAIM_FIRST = frozenset()

Params = ParamSpec("Params")
Result = TypeVar("Result")


def claim_once(session: Session, table: Table, values: dict) -> bool:
    """Insert the row that says something is done once (an event handled,
    an idempotency key taken); True when it is new, False when it was there.

    Inside a `claims_deferred` use case on PostgreSQL, the row is not
    inserted now but deferred as a plain INSERT (`defer`): it travels with
    the transaction's next statement, so the claim costs no round trip, and
    the answer is True. If the row was there after all (a duplicate
    delivery, a repeated key), the INSERT fails the transaction on the
    table's key, everything rolls back, and the use case runs again with
    this claim asked first. Anywhere else it is answered now.
    """
    deferred = _deferred_claims.get()
    if type(deferred) is set and _pipelined(session):
        deferred.add(table.name)
        defer(session, _plain_insert(table), values)
        return True
    return insert_ignoring_duplicates(session, table, values)


def claims_deferred(use_case: Callable[Params, Result]) -> Callable[Params, Result]:
    """Decorate a use case whose claims (`claim_once`, `shared.inbox.claim`)
    may be deferred: the first run assumes each claim is new; a conflict on
    a deferred claim's table rolls that run back and runs the use case
    again, each claim asked before anything is done (as it was before: a
    duplicate is then seen as one). A use case is run twice only for a
    duplicate, so what it does before the transaction that holds its claims
    (an RPC, another transaction that commits) must be safe to do twice:
    keep the claims in the use case's first transaction that writes.
    """

    @functools.wraps(use_case)
    def run(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        if _deferred_claims.get() is not None:  # inside another: that one retries
            return use_case(*args, **kwargs)
        deferred: set[str] = set()
        token = _deferred_claims.set(deferred)
        try:
            return use_case(*args, **kwargs)
        except exc.IntegrityError as error:
            if _conflict_table(error) not in deferred:
                raise
            log.debug("a deferred claim was taken before: running again, claiming first")
        finally:
            _deferred_claims.reset(token)
        token = _deferred_claims.set(_CLAIM_FIRST)
        try:
            return use_case(*args, **kwargs)
        finally:
            _deferred_claims.reset(token)

    return run


def _conflict_table(error: exc.IntegrityError) -> str | None:
    """The table whose unique key a PostgreSQL statement violated."""
    diag = getattr(error.orig, "diag", None)
    if getattr(error.orig, "pgcode", None) != _UNIQUE_VIOLATION or diag is None:
        return None
    return diag.table_name


_UNIQUE_VIOLATION = "23505"


def _pipelined(session: Session | Connection) -> bool:
    connection = connection_of(session)
    dbapi = connection.connection.dbapi_connection
    return isinstance(dbapi, pipelining.PipelinedConnection) and dbapi.in_transaction()


@functools.cache
def _plain_insert(table: Table) -> Insert:
    return table.insert().inline()


@functools.cache
def _upsert_adding(dialect: str, table: Table, key: tuple[str, ...], increments: tuple[str, ...]):
    statement = _DIALECT_INSERT[dialect](table).inline()
    return statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + statement.excluded[name] for name in increments},
    )


def upsert_adding(session: Session, table: Table, key: dict, increments: dict) -> None:
    """Insert the row, or add the increments to the one with its key, in one
    statement (deferred: sent with the transaction's next statement)."""
    dialect = session.get_bind().dialect.name
    statement = _upsert_adding(dialect, table, tuple(key), tuple(increments))
    defer(session, statement, {**key, **increments})


def defer(session: Session | Connection, statement, parameters: dict | None = None) -> None:
    """Execute a write whose result nobody reads, at the latest with the commit.

    On PostgreSQL it travels in front of the transaction's next statement,
    or with its COMMIT (shared/pipelining.py): no round trip of its own. An
    error it raises (a constraint) surfaces there and rolls the whole
    transaction back. Outside a transaction, and on SQLite, it runs now.
    It cannot return rows or a row count.
    """
    connection = connection_of(session)
    if getattr(statement, "_returning", None):
        raise ValueError("a deferred statement cannot return rows")
    if isinstance(statement, Insert) and not statement._inline:
        # No RETURNING of a generated key. (Build hot statements inline once:
        # this copy costs a new cache key on every call.)
        statement = statement.inline()
    dbapi = connection.connection.dbapi_connection
    if isinstance(dbapi, pipelining.PipelinedConnection) and dbapi.in_transaction():
        form = _interpolable(connection.dialect, statement, tuple(parameters or ()))
        if form is not None:
            dbapi.queue_interpolated(form[0], _bound(form, parameters or {}))
            return
    connection.execute(statement, parameters, execution_options={pipelining.DEFER: True})


def new_row(columns: tuple[str, ...], **values) -> SimpleNamespace:
    """A row to insert with `defer(..., vars(row))`: every one of `columns`,
    None unless given, read by attribute as its ORM object would be (views
    take either). A hot path builds no ORM object only to insert one row."""
    return SimpleNamespace(**{**dict.fromkeys(columns), **values})


def defer_rows(session: Session | Connection, table: Table, rows: list[dict]) -> None:
    """Insert rows (each with the same keys) in one deferred statement."""
    if not rows:
        return
    columns = tuple(rows[0])
    parameters = {f"{column}_{n}": row[column] for n, row in enumerate(rows) for column in columns}
    defer(session, _insert_rows(table, columns, len(rows)), parameters)


@functools.lru_cache(maxsize=256)
def _insert_rows(table: Table, columns: tuple[str, ...], count: int):
    rows = [{column: bindparam(f"{column}_{n}") for column in columns} for n in range(count)]
    return table.insert().values(rows).inline()


@functools.lru_cache(maxsize=1024)
def _interpolable(dialect, statement, keys: tuple[str, ...]):
    """The SQL of `statement` for parameters named `keys`, the values it fixes
    itself, and the type conversions its parameters need: what SQLAlchemy's
    execution would hand psycopg2, worked out once. None when executing it
    needs more than that (defaults computed per row, expanding parameters):
    then it goes through SQLAlchemy's execution."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if (
        compiled.positional
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.escaped_bind_names
    ):
        return None
    # The parameters the SQL names (binds also lists anonymous aliases).
    binds = {
        name: bind for name, bind in compiled.binds.items() if f"%({name})s" in compiled.string
    }
    fixed = {}
    for name, bind in binds.items():
        if name in keys:
            continue
        if bind.callable is not None or (bind.value is None and bind.required):
            return None
        fixed[name] = bind.value
    processors = tuple(
        (name, process)
        for name, bind in binds.items()
        if (process := bind.type.bind_processor(dialect)) is not None
    )
    return compiled.string, fixed, processors


def query(session: "Work | Session | Connection", statement, parameters: dict) -> "Rows":
    """Execute a statement whose rows are read (a SELECT, an INSERT ...
    RETURNING) in the unit of work's transaction; its rows, as a list.

    On PostgreSQL it goes straight to the pipelined driver, after what the
    transaction has queued: the SQL is worked out once per statement and
    set of parameter names (as `defer` does), and rows are named tuples
    with SQLAlchemy's result conversions applied, so a hot path pays for
    none of SQLAlchemy's per-execution work (about half of a step's
    statement cost, ops/bench/db_floor.py). A statement that needs more
    (expanding IN lists, defaults computed per row) and other databases go
    through SQLAlchemy. A driver error is raised as SQLAlchemy raises it
    (exc.IntegrityError, ...; a broken connection is invalidated).
    """
    connection = connection_of(session)
    dbapi = connection.connection.dbapi_connection
    # (Outside a transaction SQLAlchemy would begin one: leave that to it.)
    if isinstance(dbapi, pipelining.PipelinedConnection) and connection.in_transaction():
        form = _interpolable(connection.dialect, statement, tuple(parameters))
        if form is not None:
            return _query_driver(connection, dbapi, statement, form, parameters)
    return Rows(connection.execute(statement, parameters).all())


class Rows(list):
    """A statement's rows, with the Result methods hot paths use."""

    def all(self) -> list:
        return list(self)

    def first(self):
        return self[0] if self else None

    def one(self):
        if len(self) != 1:
            raise (exc.NoResultFound if not self else exc.MultipleResultsFound)(
                f"expected one row, got {len(self)}"
            )
        return self[0]

    def scalar_one(self):
        return self.one()[0]

    def scalar(self):
        return self[0][0] if self else None


def _query_driver(connection: Connection, dbapi, statement, form, parameters: dict) -> Rows:
    sql, values = form[0], _bound(form, parameters)
    cursor = dbapi.cursor()
    try:
        dbapi.execute_now(cursor, sql, values)
        fetched = cursor.fetchall()
        description = cursor.description
    except BaseException as error:  # noqa: BLE001 (re-raised, as SQLAlchemy's execution does)
        # Raises what SQLAlchemy's execution would (exc.IntegrityError, ...)
        # and invalidates a connection that broke or was cut off mid-way.
        connection._handle_dbapi_exception(error, sql, values, cursor, None)
    finally:
        cursor.close()
    if description is None:
        return Rows()
    row_type, converters = _row_form(connection.dialect, statement, sql, description)
    if not converters:
        return Rows(row_type._make(row) for row in fetched)
    return Rows(
        row_type._make(
            [convert(v) if convert else v for convert, v in zip(converters, row, strict=True)]
        )
        for row in fetched
    )


# SQL text -> (row type, conversions), for the statements `query` has run.
_ROW_FORMS: dict[str, tuple] = {}
_REMEMBER_ROW_FORMS = 1024


def _row_form(dialect, statement, sql: str, description) -> tuple:
    """A statement's row type (a named tuple of its result columns' names)
    and each column's result conversion (None: as the driver gives it)."""
    form = _ROW_FORMS.get(sql)
    if form is None:
        columns = statement.compile(dialect=dialect)._result_columns
        if len(columns) == len(description):
            names = [column.keyname for column in columns]
            converters = tuple(
                column.type._cached_result_processor(dialect, described[1])
                for column, described in zip(columns, description, strict=True)
            )
        else:  # textual SQL: no typed columns, the driver's names and values
            names, converters = [described[0] for described in description], ()
        row_type = collections.namedtuple("Row", names, rename=True)
        form = (row_type, converters if any(converters) else ())
        if len(_ROW_FORMS) < _REMEMBER_ROW_FORMS:
            _ROW_FORMS[sql] = form
    return form


def _bound(form, parameters: dict) -> dict:
    """The values psycopg2 interpolates into an `_interpolable` form's SQL:
    the statement's own fixed values and the caller's, each converted as
    SQLAlchemy's execution would convert it."""
    _sql, fixed, processors = form
    values = {**fixed, **parameters}
    for name, process in processors:
        values[name] = process(values[name])
    return values


def bulk_insert(session: Session | Connection, table: Table, rows: list[tuple]) -> None:
    """Insert many rows (tuples in the table's column order) in few statements.

    On PostgreSQL: INSERTs of up to 1000 rows, each page's values
    interpolated by psycopg2 in one call, sent after what the transaction
    has queued, so they run inside it. Elsewhere: executemany.
    """
    if not rows:
        return
    connection = connection_of(session)
    dbapi = connection.connection.dbapi_connection
    if not isinstance(dbapi, pipelining.PipelinedConnection):
        names = [column.key for column in table.columns]
        connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])
        return
    dbapi.flush()  # BEGIN and queued writes first: these belong to the transaction
    # Identifiers from the table's own metadata, quoted by the dialect.
    quote = connection.dialect.identifier_preparer.quote
    columns = ", ".join(quote(column.name) for column in table.columns)
    insert = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ".encode()  # noqa: S608
    row = "(" + ", ".join(["%s"] * len(table.columns)) + ")"
    with dbapi.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            page = rows[start : start + 1000]
            values = cursor.mogrify(", ".join([row] * len(page)), [v for r in page for v in r])
            cursor.execute(insert + values)


def advisory_lock(session: Session, *keys: str) -> None:
    """Serialise work on each key, taken in the order given, until this
    transaction ends (sent with the transaction's next statement).

    Transaction-scoped advisory locks on PostgreSQL; SQLite gives a service
    process one connection, so its transactions are serial already (and
    SQLite allows one process per service).
    """
    if keys and session.get_bind().dialect.name == "postgresql":
        defer(session, _advisory_locks(len(keys)), {f"key{i}": key for i, key in enumerate(keys)})


@functools.cache
def _advisory_locks(count: int):
    # A target list is evaluated left to right: the locks come in order.
    return select(
        *(
            func.pg_advisory_xact_lock(func.hashtextextended(bindparam(f"key{i}"), 0))
            for i in range(count)
        )
    )


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call `callback` once this UnitOfWork transaction has committed (never
    if it rolls back): for what must not count a transaction that did not
    happen, such as a metric."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


class UnitOfWork:
    """What a worker sees: transactions on its service's database."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        after_commit: Callable[[list], None] | None = None,
    ):
        """`after_commit` is given the outbox messages a committed transaction
        staged (the service's relay publishes them); without one they stay
        pending in the table for a relay's sweep."""
        self._session_factory = session_factory
        self._after_commit = after_commit

    def dialect_name(self) -> str:
        return self._session_factory.kw["bind"].dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for queries that change nothing, outside any transaction.

        Each statement sees what was committed when it started. On PostgreSQL
        it runs in autocommit mode, so a one-statement read costs one round
        trip instead of three (BEGIN, the query, COMMIT).
        """
        engine: Engine = self._session_factory.kw["bind"]
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    @contextmanager
    def commit_on_exit(self) -> Iterator["Work"]:
        """A transaction that COMMITS when the block ends normally (rolls
        back only if it raises), unlike the usual rollback-unless-committed:
        a use case is one block, and forgetting a commit() call would
        silently drop a posting. See the module docstring for why the
        commit sits inside the entrypoint. What it yields behaves as an ORM
        Session (`Work`)."""
        engine: Engine = self._session_factory.kw["bind"]
        connection = engine.connect()
        work = Work(connection, self._session_factory)
        try:
            transaction = connection.begin()
            yield work
            work.flush_orm()
            transaction.commit()
            # Only transactions that staged outbox events need the relay.
            staged_events = work.info.pop(STAGED_EVENTS, None)
            callbacks = work.info.pop(_AFTER_COMMIT, ())
        except BaseException:
            connection.rollback()
            raise
        finally:
            work.end()
        if staged_events and self._after_commit is not None:
            self._after_commit(staged_events)
        for callback in callbacks:
            callback()


class Work:
    """One UnitOfWork transaction: a Core connection, and an ORM Session on
    that same connection and transaction made only when the ORM is asked for.

    A saga step states its statements in Core (`connection_of`, `defer`,
    `shared.inbox.claim`, `shared.outbox.stage`), and an ORM Session costs
    more to make, begin and commit than such a step's statements do
    (ops/bench/db_floor.py). So a unit of work starts as a connection; the
    first ORM call (`get`, `add`, `execute`, `begin_nested`, ...) makes a
    Session joined to its transaction, whose pending objects are flushed
    before the COMMIT. Either way there is one transaction, committed or
    rolled back by `UnitOfWork.commit_on_exit`.
    """

    __slots__ = ("_connection", "_session", "_sessionmaker", "info")

    def __init__(self, connection: Connection, sessionmaker_: Callable[..., Session]):
        self._connection = connection
        self.info: dict = {}
        self._sessionmaker = sessionmaker_
        self._session: Session | None = None

    @property
    def orm(self) -> Session:
        """The Session of this transaction, made on first use."""
        if self._session is None:
            # Joined to the connection's transaction: it never commits it.
            self._session = self._sessionmaker(bind=self._connection)
        return self._session

    def __getattr__(self, name: str):
        return getattr(self.orm, name)

    def get_bind(self, *_args, **_kwargs) -> Engine:
        return self._connection.engine

    def in_nested_transaction(self) -> bool:
        return self._session is not None and self._session.in_nested_transaction()

    def connection(self, *_args, **_kwargs) -> Connection:
        """The transaction's connection (as Session.connection()), after the
        SAVEPOINT of a nested transaction begun through the Session (which
        asking the Session issues)."""
        if self._session is not None and self._session.in_nested_transaction():
            return self._session.connection()
        return self._connection

    def flush_orm(self) -> None:
        if self._session is not None:
            self._session.flush()

    def end(self) -> None:
        """Close the Session, if one was made, and return the connection."""
        try:
            if self._session is not None:
                self._session.close()
        finally:
            self._connection.close()


class Database(DependencyProvider):
    """The owning service's database (see config.database_url)."""

    def __init__(self):
        self.engine: Engine | None = None
        self._sessionmaker = None
        self._commit_listeners: list[Callable[[list], None]] = []

    def setup(self):
        service = self.container.service_name
        url = config.database_url(service)
        workers = int(self.container.config.get("max_workers", 10))
        self.engine = make_engine(url, application_name=service, pool_size=workers)
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        log.info("database ready", extra={"database": self.engine.url.render_as_string()})

    def stop(self):
        if self.engine is not None:
            self.engine.dispose()

    def kill(self):
        self.stop()

    def add_commit_listener(self, listener: Callable[[list], None]) -> None:
        """Called with the staged outbox messages after each commit that staged
        any (the outbox relay publishes them)."""
        self._commit_listeners.append(listener)

    def _notify_commit(self, staged: list) -> None:
        for listener in self._commit_listeners:
            listener(staged)

    def get_dependency(self, worker_ctx):
        return UnitOfWork(self._sessionmaker, self._notify_commit)

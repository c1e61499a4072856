"""PostgreSQL transactions in fewer round trips: a lazy BEGIN and deferred writes.

A saga step is a handful of small statements in one transaction. Sent one
by one, each costs a network round trip, a wake-up of the eventlet hub and
a protocol exchange in the server, and those, not the statements, were
most of the platform's database cost (about 70 round trips per transfer).
This dialect sends the same statements, in the same order and in the same
transaction, in fewer messages:

- BEGIN is not sent on its own: it goes out in front of the transaction's
  first statement.
- A write whose result nobody reads (`shared.database.defer`: an outbox
  row, a projection update, an advisory lock) is not sent when it is
  made: it goes out in front of the next statement that is, or with the
  COMMIT. A step that claims its event, reads what it decides on and
  writes its effect is three round trips: `BEGIN; <lock>; <claim>`, the
  read, `<writes>; COMMIT`.

The messages are PostgreSQL's simple query protocol with several
statements in one string, which psycopg2 builds by interpolating the
parameters on the client (what it does for every statement anyway;
`cursor.mogrify` is that same interpolation). The server runs them in
order and stops at the first error, which leaves the transaction aborted:
a deferred write that fails (a constraint, a deadlock) raises from the
statement or the commit it travelled with, and the transaction rolls back
as a whole, as it would have. Atomicity, isolation and the order of
statements are those of the code; only where an error surfaces moves.

psycopg2 itself runs in autocommit mode so it never sends BEGIN or COMMIT
on its own; SQLAlchemy's begin, commit and rollback are this dialect's,
so ORM sessions, Core connections, savepoints and the pool's
reset-on-return keep their meaning. A connection that SQLAlchemy runs at
isolation level AUTOCOMMIT (`UnitOfWork.read`) begins nothing.
"""

import psycopg2.extensions
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

DRIVER = "psycopg2pipelined"
# Execution option: queue this statement instead of sending it now.
DEFER = "fintech_defer"

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
AUTOCOMMIT = "AUTOCOMMIT"


class PipelinedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that holds back BEGIN and deferred writes.

    The pool hands out a proxy of this object, which forwards method calls
    but not attribute assignments: the state changes only through methods.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocommit = True
        self._transactional = True  # False while SQLAlchemy asks for AUTOCOMMIT
        self._level: str | None = None  # None: the server's default
        self._begin: str | None = None
        self._pending: list[str] = []
        self._interpolator = None  # a cursor, for mogrify

    # -- SQLAlchemy's isolation levels ----------------------------------------------

    def set_level(self, level: str) -> None:
        self._transactional = level != AUTOCOMMIT
        if self._transactional:
            self._level = level

    def level(self) -> str | None:
        """AUTOCOMMIT, the level set, or None for the server's default."""
        return self._level if self._transactional else AUTOCOMMIT

    # -- the queue ------------------------------------------------------------------

    def begin_lazily(self) -> None:
        if self._transactional:
            self._begin = f"BEGIN ISOLATION LEVEL {self._level}" if self._level else "BEGIN"

    def in_transaction(self) -> bool:
        return self._begin is not None or self.get_transaction_status() != _IDLE

    def queue(self, statement: str) -> None:
        self._pending.append(statement)

    def queue_interpolated(self, sql: str, parameters: dict) -> None:
        """Queue `sql` with its parameters interpolated as psycopg2 sends them."""
        if self._interpolator is None:
            self._interpolator = self.cursor()
        interpolated = self._interpolator.mogrify(sql, parameters)
        self._pending.append(interpolated.decode(psycopg2.extensions.encodings[self.encoding]))

    def take_prefix(self) -> str:
        """BEGIN (if not sent yet) and the queued writes, each ended by ';'."""
        parts = [self._begin, *self._pending] if self._begin else self._pending
        self._begin, self._pending = None, []
        return "".join(f"{part};" for part in parts)

    def commit_queued(self) -> None:
        """Send the queued writes and COMMIT in one message."""
        if self._begin is not None and not self._pending:
            self._begin = None  # nothing was said, so there is nothing to commit
            return
        began_here = self._begin is not None
        prefix = self.take_prefix()
        if began_here or self.get_transaction_status() != _IDLE:
            self.send(prefix + "COMMIT")

    def rollback_queued(self) -> None:
        """Forget what is queued; end the server's transaction, if there is one."""
        self._begin, self._pending = None, []
        if not self.closed and self.get_transaction_status() != _IDLE:
            self.send("ROLLBACK")

    def flush(self) -> None:
        """Send what is queued now (before a statement that cannot carry it)."""
        prefix = self.take_prefix()
        if prefix:
            self.send(prefix)

    def send(self, sql: str) -> None:
        cursor = self.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()


class PipelinedDialect(PGDialect_psycopg2):
    """psycopg2, with BEGIN sent lazily and deferred writes sent together."""

    supports_statement_cache = True

    def connect(self, *cargs, **cparams):
        cparams.setdefault("connection_factory", PipelinedConnection)
        return super().connect(*cargs, **cparams)

    def set_isolation_level(self, dbapi_connection, level):
        dbapi_connection.set_level(level)

    def get_isolation_level(self, dbapi_connection):
        return dbapi_connection.level() or super().get_isolation_level(dbapi_connection)

    def detect_autocommit_setting(self, dbapi_connection):
        return dbapi_connection.level() == AUTOCOMMIT

    def do_begin(self, dbapi_connection):
        dbapi_connection.begin_lazily()

    def do_commit(self, dbapi_connection):
        dbapi_connection.commit_queued()

    def do_rollback(self, dbapi_connection):
        dbapi_connection.rollback_queued()

    def do_execute(self, cursor, statement, parameters, context=None):
        connection = cursor.connection
        deferred = context is not None and context.execution_options.get(DEFER)
        if deferred and connection.in_transaction():
            interpolated = cursor.mogrify(statement, parameters)
            connection.queue(interpolated.decode(_codec(connection)))
            return
        if cursor.name is not None:
            # A server-side cursor's statement becomes DECLARE ... FOR <it>:
            # nothing may precede it there.
            connection.flush()
        else:
            prefix = connection.take_prefix()
            if prefix:
                # psycopg2 interpolates the whole string: a literal % in the
                # already interpolated prefix must survive that.
                statement = prefix.replace("%", "%%") + statement
        cursor.execute(statement, parameters)

    def do_execute_no_params(self, cursor, statement, context=None):
        cursor.execute(cursor.connection.take_prefix() + statement)

    def do_executemany(self, cursor, statement, parameters, context=None):
        cursor.connection.flush()
        super().do_executemany(cursor, statement, parameters, context)


def _codec(connection) -> str:
    return psycopg2.extensions.encodings[connection.encoding]


registry.register(f"postgresql.{DRIVER}", __name__, "PipelinedDialect")

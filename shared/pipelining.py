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
  read, `<writes>; COMMIT`; two when its claim is deferred as well
  (`shared.database.claims_deferred`): `BEGIN; <lock>; <claim>; <read>`,
  then `<writes>; COMMIT`.

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

Prepared statements. Parsing and planning the same few statements over
and over was a large share of the server's work. A statement a connection
has seen before is sent as `EXECUTE <name>(<values>)` of a statement
PREPAREd on that connection: PostgreSQL parses its short text and reuses
the plan. The first time a connection sees a statement it sends it as
usual and prepares it once its transaction has ended, outside any
transaction, so a statement PostgreSQL cannot prepare (a parameter whose
type it cannot infer) is simply never prepared and aborts nothing. A
transaction-pooling PgBouncer shares server connections between clients,
which breaks prepared statements: set DATABASE_PREPARED_STATEMENTS=off
behind one.
"""

import itertools
import re

import psycopg2
import psycopg2.extensions
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

DRIVER = "psycopg2pipelined"
# Execution option: queue this statement instead of sending it now.
DEFER = "fintech_defer"

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
AUTOCOMMIT = "AUTOCOMMIT"

# Statements with more distinct parameters than this are not prepared
# (an IN list of a varying length is another statement for every length).
PREPARE_MAX_PARAMETERS = 40
# Statements a connection prepares at most, and the process remembers.
PREPARE_MAX_STATEMENTS = 256
_REMEMBER_AT_MOST = 4096

_PLACEHOLDER = re.compile(r"%%|%\(([^)]+)\)s")
_names = (f"fintech_{n}" for n in itertools.count(1))
# SQL text -> (name, PREPARE statement, EXECUTE statement), for every
# connection of the process; None for one that cannot be prepared.
_PREPARABLE: dict[str, tuple[str, str, str] | None] = {}


def _prepared_forms(sql: str) -> tuple[str, str, str] | None:
    """PREPARE and EXECUTE statements for a psycopg2 (pyformat) statement."""
    if sql in _PREPARABLE:
        return _PREPARABLE[sql]
    numbers: dict[str, str] = {}  # parameter name -> $n, in order of appearance

    def positional(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "%"  # an escaped percent sign
        number = numbers.get(name)
        if number is None:
            number = numbers[name] = f"${len(numbers) + 1}"
        return number

    forms = None
    if 0 < sql.count("%(") <= 2 * PREPARE_MAX_PARAMETERS:
        body = _PLACEHOLDER.sub(positional, sql)
        if 0 < len(numbers) <= PREPARE_MAX_PARAMETERS:
            name = next(_names)
            arguments = ", ".join(f"%({parameter})s" for parameter in numbers)
            forms = (name, f"PREPARE {name} AS {body}", f"EXECUTE {name}({arguments})")
    if len(_PREPARABLE) < _REMEMBER_AT_MOST:
        _PREPARABLE[sql] = forms
    return forms


def _unpreparable(sql: str) -> None:
    _PREPARABLE[sql] = None


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
        self._prepare = True
        self._prepared: set[str] = set()  # SQL texts prepared on this connection
        self._to_prepare: set[str] = set()  # ... and to prepare once idle

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

    def queue_interpolated(self, sql: str, parameters: dict) -> None:
        """Queue `sql` with its parameters interpolated as psycopg2 sends them."""
        if self._interpolator is None:
            self._interpolator = self.cursor()
        interpolated = self._interpolator.mogrify(self.executable(sql), parameters)
        self._pending.append(interpolated.decode(psycopg2.extensions.encodings[self.encoding]))

    # -- prepared statements ----------------------------------------------------------

    def set_prepare(self, enabled: bool) -> None:
        self._prepare = enabled

    def executable(self, sql: str) -> str:
        """What to send for `sql`: EXECUTE of its prepared form once this
        connection has prepared it; else `sql`, to be prepared later."""
        if sql in self._prepared and (forms := _PREPARABLE.get(sql)) is not None:
            return forms[2]
        if (
            self._prepare
            and len(self._prepared) + len(self._to_prepare) < PREPARE_MAX_STATEMENTS
            and _prepared_forms(sql) is not None
        ):
            self._to_prepare.add(sql)
        return sql

    def _prepare_seen(self) -> None:
        """Prepare what this connection's last transaction used (it is idle now)."""
        wanted, self._to_prepare = self._to_prepare, set()
        for sql in wanted:
            forms = _PREPARABLE.get(sql)
            if forms is None or sql in self._prepared:
                continue
            try:
                self.send(forms[1])
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                return  # the connection broke: its next user finds out
            except psycopg2.Error:
                _unpreparable(sql)  # PostgreSQL cannot prepare it: send it as it is
            else:
                self._prepared.add(sql)

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
        if self._to_prepare:
            self._prepare_seen()

    def rollback_queued(self) -> None:
        """Forget what is queued; end the server's transaction, if there is one."""
        self._begin, self._pending = None, []
        if not self.closed and self.get_transaction_status() != _IDLE:
            self.send("ROLLBACK")
        if self._to_prepare and not self.closed:
            self._prepare_seen()

    def flush(self) -> None:
        """Send what is queued now (before a statement that cannot carry it)."""
        prefix = self.take_prefix()
        if prefix:
            self.send(prefix)

    def execute_now(self, cursor, sql: str, parameters) -> None:
        """Execute `sql` on `cursor` (of this connection) after what is
        queued, in one message; as its prepared form once there is one."""
        if isinstance(parameters, dict) and parameters:
            sql = self.executable(sql)
        prefix = self.take_prefix()
        if prefix:
            # psycopg2 interpolates the whole string: a literal % in the
            # already interpolated prefix must survive that.
            sql = prefix.replace("%", "%%") + sql
        cursor.execute(sql, parameters)

    def send(self, sql: str) -> None:
        cursor = self.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()


class PipelinedDialect(PGDialect_psycopg2):
    """psycopg2, with BEGIN sent lazily, deferred writes sent together and
    statements prepared once per connection (`prepare=False`: never)."""

    supports_statement_cache = True

    def __init__(self, prepare: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.prepare = prepare

    def connect(self, *cargs, **cparams):
        cparams.setdefault("connection_factory", PipelinedConnection)
        connection = super().connect(*cargs, **cparams)
        connection.set_prepare(self.prepare)
        return connection

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
            connection.queue_interpolated(statement, parameters)
            return
        if cursor.name is not None:
            # A server-side cursor's statement becomes DECLARE ... FOR <it>:
            # nothing may precede it there.
            connection.flush()
            cursor.execute(statement, parameters)
        else:
            connection.execute_now(cursor, statement, parameters)

    def do_execute_no_params(self, cursor, statement, context=None):
        cursor.execute(cursor.connection.take_prefix() + statement)

    def do_executemany(self, cursor, statement, parameters, context=None):
        cursor.connection.flush()
        super().do_executemany(cursor, statement, parameters, context)


registry.register(f"postgresql.{DRIVER}", __name__, "PipelinedDialect")

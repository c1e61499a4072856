"""Column types and SQL functions that behave the same on SQLite and PostgreSQL."""

from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes in and out, on every backend.

    SQLite keeps no zone, so values come back naive; this puts UTC back on
    them, so comparisons never mix naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class utc_hour(FunctionElement):
    """The hour of day (0-23, in UTC) of a UtcDateTime column, as an integer
    computed by the database: a read that needs only the hour then sends no
    timestamps to parse.

    PostgreSQL: the hour of the instant in UTC, whatever the session's time
    zone. SQLite: UtcDateTime keeps UTC text there, whose hour is read as is.
    """

    type = Integer()
    inherit_cache = True
    name = "utc_hour"


@compiles(utc_hour, "postgresql")
def _utc_hour_postgresql(element, compiler, **kw):
    (column,) = element.clauses
    instant = compiler.process(column, **kw)
    return f"CAST(EXTRACT(HOUR FROM {instant} AT TIME ZONE 'UTC') AS INTEGER)"


@compiles(utc_hour, "sqlite")
def _utc_hour_sqlite(element, compiler, **kw):
    (column,) = element.clauses
    instant = compiler.process(column, **kw)
    return f"CAST(strftime('%H', {instant}) AS INTEGER)"

"""Benchmark: the least a saga step's database work costs, one operation at a time.

    .venv/bin/python ops/bench/db_floor.py
    .venv/bin/python ops/bench/db_floor.py --operations 10000 --unix-socket /var/run/postgresql

Every hop of a transfer opens a unit of work (shared.database), sends a
few statements through the pipelined psycopg2 dialect (shared.pipelining)
and commits, on eventlet as the services run. This measures the process
CPU (user and kernel, getrusage) of each layer on its own, against
BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres):
a raw DBAPI round trip, SQLAlchemy's execute, an empty unit of work, a
read, a transaction with one SELECT (through SQLAlchemy, and through
shared.database.query). Nothing is written. The figures are
a floor to compare the benchmark's per-process CPU against (see
docs/PERFORMANCE.md), not a throughput. Not part of `make test`.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402 (after monkey-patching, as in the services)
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.database import UnitOfWork, connection_of, make_engine, query  # noqa: E402

_SELECT_ONE = text("SELECT 1")


def cpu_per_operation(operation: Callable[[], None], count: int) -> tuple[float, float]:
    """(user, kernel) CPU microseconds per call, after a warm-up."""
    for _ in range(min(count // 10, 300)):
        operation()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(count):
        operation()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        (after.ru_utime - before.ru_utime) / count * 1e6,
        (after.ru_stime - before.ru_stime) / count * 1e6,
    )


def operations(url: str) -> list[tuple[str, Callable[[], None]]]:
    engine = make_engine(url, application_name="bench-db-floor", pool_size=2)
    uow = UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    raw = engine.raw_connection()
    open_connection = engine.connect()

    def raw_round_trip():
        cursor = raw.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchone()
        cursor.close()

    def core_execute():
        open_connection.execute(_SELECT_ONE).scalar()

    def empty_unit_of_work():
        with uow.commit_on_exit():
            pass

    def read():
        with uow.read() as connection:
            connection.execute(_SELECT_ONE).scalar()

    def transaction_with_select():
        with uow.commit_on_exit() as session:
            connection_of(session).execute(_SELECT_ONE).scalar()

    def transaction_with_query():
        with uow.commit_on_exit() as session:
            query(session, _SELECT_ONE, {}).scalar()

    return [
        ("a raw DBAPI round trip (SELECT 1, autocommit)", raw_round_trip),
        ("SQLAlchemy Core execute on an open connection", core_execute),
        ("commit_on_exit() that says nothing", empty_unit_of_work),
        ("uow.read() with one SELECT", read),
        ("commit_on_exit() with one SELECT and its COMMIT", transaction_with_select),
        ("the same, the SELECT through query()", transaction_with_query),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=5000, help="calls per operation")
    parser.add_argument(
        "--unix-socket",
        metavar="DIR",
        help="also measure the raw round trip over PostgreSQL's Unix socket in DIR",
    )
    args = parser.parse_args()
    if args.operations < 100:
        parser.error("--operations must be at least 100")
    url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    measured = operations(url)
    if args.unix_socket:
        over_socket = make_url(url).set(host=None, port=None, query={"host": args.unix_socket})
        name, operation = operations(over_socket.render_as_string(hide_password=False))[0]
        measured.insert(1, (f"{name}, Unix socket", operation))
    print(f"{'operation':62s} {'user us':>8s} {'kernel us':>10s} {'total us':>9s}")
    for name, operation in measured:
        user, kernel = cpu_per_operation(operation, args.operations)
        print(f"{name:62s} {user:8.1f} {kernel:10.1f} {user + kernel:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a reconciliation run costs as the ledger grows: full passes and incremental runs.

    .venv/bin/python ops/bench/reconciliation.py                      # 20,000 then 200,000
    .venv/bin/python ops/bench/reconciliation.py --sizes 20000,1000000 --new 2000

For each size it makes fresh PostgreSQL databases (accounts, transactions,
risk, payments: migrated, dropped at the end), loads that many settled
transfers with ops/bench/history.py's loader (the services' own code, COPY),
adds payments' operation for each card deposit (what payments would have
written), and then measures, each with its wall time and the CPU of this
process and of PostgreSQL (from /proc):

- the first run, a full pass: every posting, every balance against its
  postings, every ended transfer (and, with no cursor yet, the walk of
  transfer outcomes from the start);
- a full pass again, as the daily one runs;
- an incremental run with nothing new since;
- an incremental run after --new more transfers.

The reconciler is the accounts service's own (services/accounts/
reconciliation/); its questions to transactions and payments go straight
to their read functions on their databases instead of over RPC, so the
numbers are the checks' cost, not the broker's. The provider comparison is
left out (it lists the provider's objects in a window, whatever the ledger's
size): the provider cursor is set past the runs.
"""

import argparse
import os
import sys
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from sqlalchemy.orm import sessionmaker

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import procstat  # noqa: E402
from history import History  # noqa: E402

from services.accounts import reconciliation  # noqa: E402
from services.accounts.reconciliation.runs import _move_cursor  # noqa: E402
from services.payments import reconciliation as payments_reconciliation  # noqa: E402
from services.transactions import reconciliation as transactions_reconciliation  # noqa: E402
from shared.database import UnitOfWork, make_engine  # noqa: E402
from shared.migrate import upgrade  # noqa: E402

SERVICES = ("accounts", "transactions", "risk", "payments")
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class DirectPeers:
    """transactions' and payments' read functions, called in this process."""

    def __init__(self, transactions: UnitOfWork, payments: UnitOfWork):
        self.transactions, self.payments = transactions, payments

    def ended_transfers(self, after, limit, settled_seconds):
        before = datetime.now(UTC) - timedelta(seconds=settled_seconds)
        return transactions_reconciliation.ended_transfers(self.transactions, after, limit, before)

    def ended_transfers_by_id(self, after, limit):
        return transactions_reconciliation.ended_transfers_by_id(self.transactions, after, limit)

    def transfer_states(self, transfer_ids):
        return transactions_reconciliation.transfer_states(self.transactions, transfer_ids)

    def operations_between(self, after, upto):
        return payments_reconciliation.operations_between(self.payments, after, upto)

    def stuck_transfers(self, grace_seconds, limit):
        before = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        return transactions_reconciliation.stuck_transfers(self.transactions, before, limit)

    def operations_for_transfers(self, transfer_ids):
        return payments_reconciliation.operations_for_transfers(self.payments, transfer_ids)

    def reconcile_provider(self, since, until):
        raise AssertionError("the provider window is empty in this benchmark")


def _admin():
    connection = psycopg2.connect(ADMIN_URL)
    connection.autocommit = True
    return connection


def _urls(prefix: str) -> dict[str, str]:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return {service: f"{base}/{prefix}_{service}" for service in SERVICES}


def _create(prefix: str) -> dict[str, str]:
    urls = _urls(prefix)
    with closing(_admin()) as conn, conn.cursor() as cur:
        for service in SERVICES:
            cur.execute(f'CREATE DATABASE "{prefix}_{service}"')
    for service, url in urls.items():
        upgrade(service, url)
    return urls


def _drop(prefix: str) -> None:
    with closing(_admin()) as conn, conn.cursor() as cur:
        for service in SERVICES:
            cur.execute(f'DROP DATABASE IF EXISTS "{prefix}_{service}" WITH (FORCE)')


def _load(urls: dict[str, str], transfers: int, seed: int) -> None:
    customers = max(transfers // 20, 10)
    started = time.monotonic()
    History({s: urls[s] for s in ("transactions", "accounts", "risk")}, seed).load(
        transfers, customers
    )
    _payments_for_deposits(urls)
    note(f"loaded {transfers} transfers in {time.monotonic() - started:.0f} s")


def _payments_for_deposits(urls: dict[str, str]) -> None:
    """payments' succeeded charge for every card deposit that has none yet."""
    with closing(psycopg2.connect(urls["transactions"])) as tx, tx.cursor() as cur:
        cur.execute(
            "SELECT transfer_id, amount, currency FROM transfer_view WHERE kind = 'deposit'"
        )
        deposits = cur.fetchall()
    now = datetime.now(UTC)
    with closing(psycopg2.connect(urls["payments"])) as pay, pay, pay.cursor() as cur:
        cur.executemany(
            "INSERT INTO provider_operations (id, kind, transfer_id, provider, idempotency_key,"
            " amount, currency, request_fingerprint, status, provider_reference, attempts,"
            " created_at, updated_at, finished_at) VALUES (%s, 'charge', %s, 'sandbox', %s, %s,"
            " %s, 'history', 'succeeded', %s, 1, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (str(uuid.uuid4()), t, f"charge-{t}", a, c, f"ch_{t[:8]}", now, now, now)
                for t, a, c in deposits
            ],
        )


def _uow(url: str) -> UnitOfWork:
    return UnitOfWork(sessionmaker(make_engine(url), expire_on_commit=False))


def _measure(reconciler, full: bool, label: str) -> dict:
    before = procstat.snapshot(roots=[os.getpid()])
    started = time.monotonic()
    run = reconciler.run(now=datetime.now(UTC), full=full, trigger="operator")
    wall = time.monotonic() - started
    cpu = procstat.diff(before, procstat.snapshot(roots=[os.getpid()]))
    mine = sum(v for k, v in cpu.items() if k != "postgres")
    result = {
        "label": label,
        "wall_s": round(wall, 3),
        "cpu_reconciler_s": round(mine, 3),
        "cpu_postgres_s": round(cpu.get("postgres", 0.0), 3),
        "found": run["discrepancies_found"],
        "checked": run["checked"],
    }
    note(
        f"  {label:<28} wall {wall:7.3f} s  cpu: reconciler {mine:6.3f} s, "
        f"postgres {cpu.get('postgres', 0.0):6.3f} s  found {run['discrepancies_found']}"
    )
    return result


def _skip_provider(session) -> None:
    """The provider cursor past the run's end: no window to compare."""
    now = datetime.now(UTC)
    _move_cursor(session, "provider", now + timedelta(days=1), now)


def measure_size(size: int, new: int, keep: bool = False) -> list[dict]:
    prefix = f"recbench_{uuid.uuid4().hex[:6]}"
    urls = _create(prefix)
    try:
        _load(urls, size, seed=7)
        accounts = _uow(urls["accounts"])
        peers = DirectPeers(_uow(urls["transactions"]), _uow(urls["payments"]))
        settings = reconciliation.Settings(lag=timedelta(0), provider_lag=timedelta(0))
        reconciler = reconciliation.Reconciler(accounts, peers, settings)
        with accounts.commit_on_exit() as session:  # no provider window: see the docstring
            _skip_provider(session)
        note(f"{size} transfers in the ledger:")
        results = [
            {**_measure(reconciler, True, "first run (a full pass)"), "size": size},
            {**_measure(reconciler, True, "full pass"), "size": size},
            {**_measure(reconciler, False, "incremental, nothing new"), "size": size},
        ]
        _load(urls, new, seed=11)
        with accounts.commit_on_exit() as session:
            _skip_provider(session)
        results.append({**_measure(reconciler, False, f"incremental, {new} new"), "size": size})
        return results
    finally:
        if keep:
            note(f"kept the databases {prefix}_*")
        else:
            _drop(prefix)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--new", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows += measure_size(size, args.new, args.keep)
    print(
        f"{'ledger':>9} {'run':<28} {'wall s':>8} {'cpu recon s':>12} {'cpu pg s':>9} {'found':>6}"
    )
    for row in rows:
        print(
            f"{row['size']:>9} {row['label']:<28} {row['wall_s']:>8.3f} "
            f"{row['cpu_reconciler_s']:>12.3f} {row['cpu_postgres_s']:>9.3f} {row['found']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

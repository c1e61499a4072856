"""Load a history of settled transfers into a platform's databases, quickly.

    .venv/bin/python ops/bench/history.py --transfers 1000000
    .venv/bin/python ops/bench/history.py --transfers 1000000 --customers 20000 \\
        --owner <user id> --owner-accounts <account id>,<account id> --owner-transfers 50000

For measuring the platform with a grown ledger and event store (the
benchmark's --history does this for you). Databases come from
DATABASE_URL with `{service}` in it, as the services read it; they must be
migrated, PostgreSQL, and the platform idle while it loads.

What it writes is what the services would have written for those
transfers, built by their own code: each transfer's events come from the
Transfer aggregate (`request`, `record_step`, as the saga folds them),
its snapshot from `Transfer.snapshot`, its read-model rows from
transactions' projections, its journal entry and postings (with running
`balance_after`) and closed_transfers row as accounts' ledger keeps them,
risk's assessment and account facts, and the inbox rows of the three
consumers an internal transfer passes (risk, accounts, transactions).
Only the path differs: rows go in with COPY, one table at a time, instead
of one saga at a time. Not written: the outbox rows (published rows are
pruned after their retention, docs/OPERATIONS.md), and notifications'
and analytics' databases, which no step of a transfer reads back.

The history: --customers customers with two EUR accounts each, each
account funded by a card deposit (through the bank's card clearing
account), then internal transfers of EUR 0.01 to 50.00 between random
accounts, never overdrawing one, spread over the last 90 days. With
--owner, that many of them go back and forth between the owner's two
existing accounts instead (same amount each way, so their balances end
where they started), giving one customer a long history to page through.
Money is conserved: every entry sums to zero and every balance is the sum
of its postings.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.accounts import consumers as accounts_consumers  # noqa: E402
from services.accounts import ledger  # noqa: E402
from services.risk import consumers as risk_consumers  # noqa: E402
from services.transactions import consumers as transactions_consumers  # noqa: E402
from services.transactions import projections  # noqa: E402
from services.transactions.domain import Transfer  # noqa: E402
from shared import contracts  # noqa: E402

DAYS = 90
CURRENCY = "EUR"
FUNDING = 1_000_000  # EUR 10,000.00 per account
NULL = r"\N"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Table:
    """Rows for one table, sent with COPY a batch at a time."""

    def __init__(self, connection, name: str, columns: tuple[str, ...]):
        self.connection, self.name, self.columns = connection, name, columns
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)
        self.count = 0
        self.pending = 0

    def add(self, *values) -> None:
        self.writer.writerow(NULL if value is None else value for value in values)
        self.pending += 1

    def flush(self) -> None:
        if not self.pending:
            return
        self.buffer.seek(0)
        with self.connection.cursor() as cursor:
            cursor.copy_expert(
                f"COPY {self.name} ({', '.join(self.columns)}) FROM STDIN "
                f"WITH (FORMAT csv, NULL '{NULL}')",
                self.buffer,
            )
        self.count += self.pending
        self.pending = 0
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)


class History:
    def __init__(self, urls: dict[str, str], seed: int):
        self.random = random.Random(seed)
        self.db = {name: psycopg2.connect(url) for name, url in urls.items()}
        tx, acc, risk = self.db["transactions"], self.db["accounts"], self.db["risk"]
        self.events = Table(
            tx,
            "events",
            (
                "position",
                "stream_id",
                "version",
                "event_type",
                "data",
                "correlation_id",
                "recorded_at",
            ),
        )
        self.snapshots = Table(tx, "snapshots", ("stream_id", "version", "state", "taken_at"))
        self.views = Table(tx, "transfer_view", tuple(projections.view_row(Transfer(), 0)))
        self.histories = Table(
            tx, "account_history", ("account_id", "transfer_id", "direction", "position")
        )
        self.requests = Table(
            tx,
            "transfer_requests",
            ("owner_id", "idempotency_key", "request_hash", "transfer_id", "created_at"),
        )
        self.accounts = Table(
            acc, "accounts", ("id", "owner_id", "kind", "currency", "name", "status", "created_at")
        )
        self.entries = Table(
            acc, "journal_entries", ("id", "transfer_id", "kind", "description", "created_at")
        )
        self.postings = Table(
            acc,
            "postings",
            ("entry_id", "account_id", "amount", "currency", "balance_after", "created_at"),
        )
        self.closed = Table(acc, "closed_transfers", ("transfer_id", "outcome", "closed_at"))
        self.ages = Table(
            risk, "account_ages", ("account_id", "owner_id", "currency", "opened_at", "recorded_at")
        )
        self.assessments = Table(
            risk,
            "assessments",
            (
                "transfer_id",
                "kind",
                "account_id",
                "amount",
                "currency",
                "decision",
                "score",
                "reasons",
                "event_id",
                "assessed_at",
                "owner_id",
                "beneficiary",
                "tier",
                "rules_version",
                "final_decision",
                "signals",
            ),
        )
        # Each consumer's inbox: the event it claimed for each transfer.
        inbox = ("event_id", "handler", "event_type", "handled_at")
        self.inboxes = {
            contracts.TRANSFER_REQUESTED: (
                Table(risk, "inbox", inbox),
                risk_consumers.ASSESS_HANDLER,
            ),
            contracts.TRANSFER_APPROVED: (
                Table(acc, "inbox", inbox),
                accounts_consumers.APPROVED_HANDLER,
            ),
            contracts.TRANSFER_POSTED: (
                Table(tx, "inbox", inbox),
                transactions_consumers.STEP_HANDLER,
            ),
        }
        with tx.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(position), 0) FROM events")
            self.position = cursor.fetchone()[0]
        self.balances: dict[str, int] = {}  # the accounts this load touches
        self.owners: dict[str, str] = {}
        self.clearing = ledger.system_account_id(ledger.CARD_CLEARING, CURRENCY)
        self.transfers = 0

    # -- one transfer, as the saga leaves it ----------------------------------------------

    def transfer(self, kind, owner, to_owner, amount, source, target, steps, at: datetime):
        transfer_id = str(uuid.uuid4())
        requested = Transfer.request(
            transfer_id, kind, owner, to_owner, amount, CURRENCY,
            source, target, "history", {"type": "card", "token": "tok_ok"}
            if kind == contracts.KIND_DEPOSIT else None, None,
            at + timedelta(seconds=60), at,
        )  # fmt: skip
        transfer = Transfer.replay([requested])
        prior, step = steps
        settled = at + timedelta(milliseconds=40)
        events = [requested, *transfer.record_step(step, {}, settled, prior)]
        for event in events[1:]:
            transfer.apply(event)
        first = self.position + 1
        for version, event in enumerate(events, start=1):
            self.position += 1
            self.events.add(
                self.position, transfer_id, version, event.type, json.dumps(event.data),
                "history", at.isoformat(),
            )  # fmt: skip
        self.snapshots.add(transfer_id, transfer.version, json.dumps(transfer.snapshot()), at)
        view = projections.view_row(transfer, first)
        self.views.add(*(view[column] for column in self.views.columns))
        for row in projections.history_rows(transfer, first):
            self.histories.add(row["account_id"], transfer_id, row["direction"], first)
        request = {"kind": kind, "amount": amount, "from": source, "to": target}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        self.requests.add(owner, f"history-{transfer_id}", digest, transfer_id, at.isoformat())
        entry_id = str(uuid.uuid4())
        debit = self.clearing if kind == contracts.KIND_DEPOSIT else source
        self.entries.add(entry_id, transfer_id, kind, "history", settled.isoformat())
        for account, signed in sorted(((debit, -amount), (target, amount))):
            self.balances[account] = self.balances.get(account, 0) + signed
            self.postings.add(
                entry_id, account, signed, CURRENCY, self.balances[account], settled.isoformat()
            )
        self.closed.add(transfer_id, ledger.POSTED, settled.isoformat())
        if self.postings.pending >= 100_000:
            self.flush()
        if kind == contracts.KIND_INTERNAL:
            for event_type, (inbox, handler) in self.inboxes.items():
                inbox.add(str(uuid.uuid4()), handler, event_type, settled.isoformat())
            self.assessments.add(
                transfer_id, kind, source, amount, CURRENCY, contracts.APPROVE, 0, "[]",
                str(uuid.uuid4()), at.isoformat(), owner, f"account:{target}", "default", 0,
                contracts.APPROVE, "{}",
            )  # fmt: skip
        self.transfers += 1

    def open_account(self, owner: str, at: datetime) -> str:
        account = str(uuid.uuid4())
        self.accounts.add(account, owner, "customer", CURRENCY, "History", "active", at)
        self.ages.add(account, owner, CURRENCY, at, at)
        self.owners[account] = owner
        self.balances[account] = 0
        return account

    # -- the load ---------------------------------------------------------------------------

    def load(self, transfers: int, customers: int, owner=None, owner_accounts=(), own=0):
        now = datetime.now(UTC)
        start = now - timedelta(days=DAYS)
        step = (now - timedelta(minutes=5) - start) / max(transfers, 1)
        accounts = []
        for _ in range(customers):
            customer = str(uuid.uuid4())
            accounts += [self.open_account(customer, start), self.open_account(customer, start)]
        self.balances[self.clearing] = self.clearing_balance()
        if owner:
            for account in owner_accounts:
                self.balances[account] = self.current_balance(account)
                self.owners[account] = owner
        at = start
        for account in accounts:  # funding: one card deposit each
            self.transfer(
                contracts.KIND_DEPOSIT, self.owners[account], None, FUNDING, None, account,
                ({"type": contracts.CARD_CHARGED, "at": at.isoformat()},
                 contracts.DEPOSIT_CREDITED),
                at,
            )  # fmt: skip
            at += step
        internal = transfers - len(accounts)
        own_every = internal // own if own else 0
        approved = contracts.TRANSFER_APPROVED
        back = None
        for n in range(internal):
            if own_every and n % own_every == 0 and own > 0:
                if back is None:
                    source, target = owner_accounts
                    amount = self.random.randint(1, min(5_000, self.balances[source]))
                    back = (target, source, amount)
                else:
                    source, target, amount = back
                    back = None
                own -= 1
            else:
                source, target = self.random.sample(accounts, 2)
                amount = min(self.random.randint(1, 5_000), self.balances[source])
                if amount <= 0:
                    source, target = target, source
                    amount = self.random.randint(1, min(5_000, self.balances[source]))
            self.transfer(
                contracts.KIND_INTERNAL, self.owners[source], self.owners[target], amount,
                source, target, ({"type": approved, "at": at.isoformat()},
                                 contracts.TRANSFER_POSTED),
                at,
            )  # fmt: skip
            at += step
            if n and n % 100_000 == 0:
                note(f"history: {n + len(accounts)} transfers")
        self.finish()

    def clearing_balance(self) -> int:
        with self.db["accounts"].cursor() as cursor:
            cursor.execute("SELECT balance FROM balances WHERE account_id = %s", (self.clearing,))
            row = cursor.fetchone()
        if row is None:
            with self.db["accounts"].cursor() as cursor:
                cursor.execute(
                    "INSERT INTO accounts (id, owner_id, kind, currency, name, status, created_at)"
                    " VALUES (%s, NULL, 'system', %s, %s, 'active', now())",
                    (self.clearing, CURRENCY, f"{ledger.CARD_CLEARING} {CURRENCY}"),
                )
                cursor.execute(
                    "INSERT INTO balances (account_id, currency, balance, held, allow_negative,"
                    " updated_at) VALUES (%s, %s, 0, 0, true, now())",
                    (self.clearing, CURRENCY),
                )
            return 0
        return row[0]

    def current_balance(self, account: str) -> int:
        with self.db["accounts"].cursor() as cursor:
            cursor.execute("SELECT balance, held FROM balances WHERE account_id = %s", (account,))
            row = cursor.fetchone()
        if row is None:
            raise SystemExit(f"no account {account} in the accounts database")
        if row[1]:
            raise SystemExit(f"account {account} has funds on hold: let its payouts settle first")
        return row[0]

    def flush(self) -> None:
        """Every table's rows so far, parents before the rows that refer to them."""
        for table in (
            self.accounts, self.ages, self.events, self.snapshots, self.views, self.histories,
            self.requests, self.entries, self.postings, self.closed, self.assessments,
            *(inbox for inbox, _ in self.inboxes.values()),
        ):  # fmt: skip
            table.flush()

    def finish(self) -> None:
        self.flush()
        new = [a for a in self.balances if a in self.owners and a not in self.existing()]
        with self.db["accounts"].cursor() as cursor:
            cursor.executemany(
                "INSERT INTO balances (account_id, currency, balance, held, allow_negative,"
                " updated_at) VALUES (%s, %s, %s, 0, false, now())",
                [(account, CURRENCY, self.balances[account]) for account in new],
            )
            cursor.executemany(
                "UPDATE balances SET balance = %s, updated_at = now() WHERE account_id = %s",
                [(self.balances[a], a) for a in self.balances if a not in new],
            )
        with self.db["transactions"].cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'position'), %s)", (self.position,)
            )
        for connection in self.db.values():
            connection.commit()
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        with self.db["transactions"].cursor() as cursor:
            try:  # write the load out now rather than during the next measurement
                cursor.execute("CHECKPOINT")
            except psycopg2.errors.InsufficientPrivilege:
                note("history: CHECKPOINT needs a superuser or pg_checkpoint; skipped")

    def existing(self) -> set[str]:
        if not hasattr(self, "_existing"):
            with self.db["accounts"].cursor() as cursor:
                cursor.execute("SELECT account_id FROM balances")
                self._existing = {row[0] for row in cursor}
        return self._existing


def database_urls() -> dict[str, str]:
    template = os.environ.get("DATABASE_URL", "")
    if "{service}" not in template or not template.startswith("postgresql"):
        raise SystemExit("set DATABASE_URL to the platform's PostgreSQL URL with {service} in it")
    return {
        service: template.replace("{service}", service).replace("+psycopg2", "")
        for service in ("transactions", "accounts", "risk")
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--owner", help="a customer to give a long history of their own")
    parser.add_argument("--owner-accounts", default="", help="their two accounts, comma-separated")
    parser.add_argument("--owner-transfers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    owner_accounts = tuple(a for a in args.owner_accounts.split(",") if a)
    if args.owner and len(owner_accounts) != 2:
        parser.error("--owner needs --owner-accounts with two accounts")
    if args.transfers < 2 * args.customers:
        parser.error("--transfers must cover a funding deposit per account (2 per customer)")
    started = time.monotonic()
    history = History(database_urls(), args.seed)
    history.load(
        args.transfers,
        args.customers,
        args.owner,
        owner_accounts,
        args.owner_transfers - args.owner_transfers % 2,
    )
    elapsed = time.monotonic() - started
    note(
        f"history: {history.transfers} transfers ({history.events.count} events, "
        f"{history.postings.count} postings) in {elapsed:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

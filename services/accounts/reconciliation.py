"""Reconciliation: prove every cent, on a schedule and on demand.

A run checks, and stores what does not add up as discrepancies:

- the ledger (accounts' own tables): every journal entry's postings sum to
  zero per currency; each posting's `balance_after` is its account's
  previous one plus its amount (so, by induction, the sum of its postings);
  each account's balance is its latest `balance_after`; `held` is the sum
  of its active holds; all balances of a currency (customers and the
  clearing accounts) sum to zero;
- transfers against the ledger (with transactions): each ended transfer
  has the journal entry its outcome needs (a completed one exactly one
  balanced entry moving its amount between its accounts, a failed one none
  or a reversed pair), every entry belongs to a transfer that completed or
  is still in flight, no active hold belongs to an ended transfer, and no
  transfer is pending past its deadline;
- money that crosses the provider (with payments): each completed deposit
  and payout has a succeeded provider operation of its amount, a failed one
  none; and payments' operations match the provider's own records (payments
  asks the provider's API).

Incremental: a run reads postings after the last one checked and
transfers that ended after the last position checked, so its cost follows
what is new, not the ledger's size. Rows younger than `lag` are left for
the next run (a transaction still open could commit a lower id). A full
pass starts both from the beginning, adds each account's balance against
the sum of all its postings, and clears what it no longer finds.

A discrepancy stays open until a run no longer sees it (for what is
checked afresh each run, and for everything in a full pass) or an operator
resolves it with a note. One open row per problem (kind and subject).
"""

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.engine import Connection

from services.accounts.domain import AccountKind, HoldStatus
from services.accounts.ledger import CARD_CLEARING, PAYOUT_CLEARING, system_account_id
from services.accounts.models import (
    Discrepancy,
    Hold,
    JournalEntry,
    Posting,
    ReconciliationCursor,
    ReconciliationRun,
)
from shared import config, contracts
from shared.database import UnitOfWork, insert_ignoring_duplicates
from shared.errors import Conflict, NotFound
from shared.money import format_minor
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

# Kinds, by what finds them.
ENTRY_UNBALANCED = "entry_unbalanced"
BALANCE_CHAIN_BROKEN = "balance_chain_broken"
BALANCE_MISMATCH = "balance_mismatch"
HELD_MISMATCH = "held_mismatch"
CURRENCY_NOT_CONSERVED = "currency_not_conserved"
HOLD_FOR_ENDED_TRANSFER = "hold_for_ended_transfer"
ENTRY_MISSING = "entry_missing"
ENTRY_UNEXPECTED = "entry_unexpected"
ENTRY_MISMATCH = "entry_mismatch"
PAYMENT_MISMATCH = "payment_mismatch"
PROVIDER_RECORD_MISSING = "provider_record_missing"
PROVIDER_AMOUNT_MISMATCH = "provider_amount_mismatch"
PROVIDER_STATUS_MISMATCH = "provider_status_mismatch"
PROVIDER_OPERATION_UNKNOWN = "provider_operation_unknown"
TRANSFER_STUCK = "transfer_stuck"

LEDGER_KINDS = (ENTRY_UNBALANCED, BALANCE_CHAIN_BROKEN, BALANCE_MISMATCH)
# Looked at afresh by every run: gone from a run means gone.
EVERY_RUN_KINDS = (HELD_MISMATCH, CURRENCY_NOT_CONSERVED, HOLD_FOR_ENDED_TRANSFER, TRANSFER_STUCK)
TRANSFER_KINDS = (ENTRY_MISSING, ENTRY_UNEXPECTED, ENTRY_MISMATCH, PAYMENT_MISMATCH)
PROVIDER_KINDS = (
    PROVIDER_RECORD_MISSING,
    PROVIDER_AMOUNT_MISMATCH,
    PROVIDER_STATUS_MISMATCH,
    PROVIDER_OPERATION_UNKNOWN,
)
KINDS = LEDGER_KINDS + EVERY_RUN_KINDS + TRANSFER_KINDS + PROVIDER_KINDS

OPEN, CLEARED, RESOLVED = "open", "cleared", "resolved"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
INCREMENTAL, FULL = "incremental", "full"

_POSTINGS, _TRANSFERS, _PROVIDER, _LEASE = "postings", "transfers", "provider", "lease"
_PROVIDER_WINDOW = timedelta(days=7)  # the most payments compares in one call
_BATCH = 2000  # transfers asked about per RPC (the most the peers take)


class Peers(Protocol):
    """What the reconciler asks the other services (over RPC in the service)."""

    def ended_transfers(self, after: int, limit: int, settled_seconds: int) -> dict: ...
    def ended_transfers_by_id(self, after: str, limit: int) -> dict: ...
    def transfer_states(self, transfer_ids: list[str]) -> dict: ...
    def operations_between(self, after: str, upto: str | None) -> dict: ...
    def stuck_transfers(self, grace_seconds: int, limit: int) -> list[dict]: ...
    def operations_for_transfers(self, transfer_ids: list[str]) -> dict: ...
    def reconcile_provider(self, since: str, until: str) -> dict: ...
    def provider_totals(self, day: str, currency: str) -> dict: ...


@dataclass(frozen=True)
class Settings:
    lag: timedelta = timedelta(seconds=60)
    provider_lag: timedelta = timedelta(minutes=10)
    provider_first_window: timedelta = timedelta(days=1)
    chunk: int = 20_000  # postings per ledger query
    lease: timedelta = timedelta(minutes=30)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            lag=timedelta(seconds=config.env_int("RECONCILIATION_LAG_SECONDS", 60, 0)),
            provider_lag=timedelta(
                seconds=config.env_int("RECONCILIATION_PROVIDER_LAG_SECONDS", 600, 0)
            ),
        )


@dataclass(frozen=True)
class Finding:
    kind: str
    transfer_id: str | None = None
    account_id: str | None = None
    entry_id: str | None = None
    detail: Mapping = field(default_factory=dict)
    ref: str = ""  # what else tells the problem apart (a currency, a provider key)

    @property
    def fingerprint(self) -> str:
        subject = (self.transfer_id, self.account_id, self.entry_id, self.ref)
        return ":".join([self.kind, *(part or "" for part in subject)])


# -- the ledger ------------------------------------------------------------------

_postings = Posting.__table__
_entries = JournalEntry.__table__
_holds = Hold.__table__
_runs = ReconciliationRun.__table__
_discrepancies = Discrepancy.__table__
_cursors = ReconciliationCursor.__table__

_LAST_POSTING_BEFORE = text("SELECT max(id) FROM postings WHERE created_at < :before").bindparams(
    bindparam("before", type_=UtcDateTime)
)

_ENTRIES_POSTED = text("SELECT DISTINCT entry_id FROM postings WHERE id > :lo AND id <= :hi")

_ALL_UNBALANCED = (
    select(_postings.c.entry_id, _postings.c.currency, func.sum(_postings.c.amount).label("total"))
    .group_by(_postings.c.entry_id, _postings.c.currency)
    .having(func.sum(_postings.c.amount) != 0)
)
# By the entries' ids (the entry_id index), not a join the planner could
# answer by reading every posting once per window.
_UNBALANCED = _ALL_UNBALANCED.where(_postings.c.entry_id.in_(bindparam("entries", expanding=True)))

# Each posting against its account's previous one (the (account_id, id) index).
_CHAIN = text(
    """
    SELECT p.id, p.account_id, p.entry_id, p.amount, p.balance_after,
           (SELECT q.balance_after FROM postings q
            WHERE q.account_id = p.account_id AND q.id < p.id
            ORDER BY q.id DESC LIMIT 1) AS previous
    FROM postings p
    WHERE p.id > :lo AND p.id <= :hi
    """
)

_TOUCHED_BALANCES = text(
    """
    SELECT b.account_id, b.balance,
           (SELECT q.balance_after FROM postings q
            WHERE q.account_id = b.account_id ORDER BY q.id DESC LIMIT 1) AS latest
    FROM balances b
    WHERE b.account_id IN (SELECT account_id FROM postings WHERE id > :lo AND id <= :hi)
    """
)

_BALANCES_AGAINST_SUMS = text(
    """
    SELECT b.account_id, b.balance, coalesce(s.total, 0) AS total
    FROM balances b
    LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s
      ON s.account_id = b.account_id
    WHERE b.balance <> coalesce(s.total, 0)
    """
)

_HELD = text(
    """
    SELECT b.account_id, b.held, coalesce(h.total, 0) AS total
    FROM balances b
    LEFT JOIN (SELECT account_id, sum(amount) AS total FROM holds
               WHERE status = 'active' GROUP BY account_id) h
      ON h.account_id = b.account_id
    WHERE b.held <> coalesce(h.total, 0)
    """
)

_NOT_CONSERVED = text(
    "SELECT currency, sum(balance) AS total FROM balances GROUP BY currency "
    "HAVING sum(balance) <> 0"
)

_ACTIVE_HOLDS = select(
    _holds.c.id, _holds.c.transfer_id, _holds.c.account_id, _holds.c.amount, _holds.c.currency
).where(_holds.c.status == HoldStatus.ACTIVE, _holds.c.created_at < bindparam("before"))

_TRANSFERS_OF_ENTRIES = (
    select(_entries.c.transfer_id)
    .distinct()
    .where(
        _entries.c.id.in_(bindparam("entries", expanding=True)),
        _entries.c.transfer_id.is_not(None),
    )
)

_ENTRY_ROWS = select(
    _entries.c.transfer_id,
    _entries.c.id,
    _entries.c.kind,
    _postings.c.account_id,
    _postings.c.amount,
    _postings.c.currency,
).join(_postings, _postings.c.entry_id == _entries.c.id)
_ENTRIES_OF = _ENTRY_ROWS.where(_entries.c.transfer_id.in_(bindparam("ids", expanding=True)))


def entries_posted(connection: Connection, lo: int, hi: int) -> list[str]:
    """The journal entries with a posting in (lo, hi]."""
    return [row[0] for row in connection.execute(_ENTRIES_POSTED, {"lo": lo, "hi": hi})]


def transfers_of(connection: Connection, entry_ids: list[str]) -> list[str]:
    """The transfers those entries belong to."""
    found: set[str] = set()
    for batch in _batches(entry_ids):
        found.update(
            row[0] for row in connection.execute(_TRANSFERS_OF_ENTRIES, {"entries": batch})
        )
    return sorted(found)


def _unbalanced(rows) -> list[Finding]:
    return [
        Finding(
            ENTRY_UNBALANCED,
            entry_id=row.entry_id,
            ref=row.currency,
            detail={"currency": row.currency, "sum": int(row.total)},
        )
        for row in rows
    ]


_ENTRIES_AFTER = _ENTRY_ROWS.where(_entries.c.transfer_id > bindparam("after"))
_ENTRIES_UPTO = _ENTRIES_AFTER.where(_entries.c.transfer_id <= bindparam("upto"))


def check_entries(connection: Connection) -> list[Finding]:
    """Full pass: every journal entry's postings, per currency."""
    return _unbalanced(connection.execute(_ALL_UNBALANCED))


def check_postings(connection: Connection, lo: int, hi: int, entry_ids: list[str]) -> list[Finding]:
    """The given entries (those with a posting in the window), the balance chain
    and touched balances for postings (lo, hi]."""
    findings = [
        finding
        for batch in _batches(entry_ids)
        for finding in _unbalanced(connection.execute(_UNBALANCED, {"entries": batch}))
    ]
    for row in connection.execute(_CHAIN, {"lo": lo, "hi": hi}):
        expected = (row.previous or 0) + row.amount
        if row.balance_after != expected:
            findings.append(
                Finding(
                    BALANCE_CHAIN_BROKEN,
                    account_id=row.account_id,
                    entry_id=row.entry_id,
                    ref=str(row.id),
                    detail={
                        "posting_id": row.id,
                        "balance_after": row.balance_after,
                        "expected": expected,
                    },
                )
            )
    for row in connection.execute(_TOUCHED_BALANCES, {"lo": lo, "hi": hi}):
        if row.balance != (row.latest or 0):
            findings.append(
                Finding(
                    BALANCE_MISMATCH,
                    account_id=row.account_id,
                    detail={"balance": row.balance, "latest_balance_after": row.latest},
                )
            )
    return findings


def check_balance_sums(connection: Connection) -> list[Finding]:
    """Full pass only: every balance against the sum of all its postings."""
    return [
        Finding(
            BALANCE_MISMATCH,
            account_id=row.account_id,
            detail={"balance": row.balance, "sum_of_postings": int(row.total)},
        )
        for row in connection.execute(_BALANCES_AGAINST_SUMS)
    ]


def check_balances(connection: Connection) -> list[Finding]:
    """Held against active holds, and each currency summing to zero."""
    findings = [
        Finding(
            HELD_MISMATCH,
            account_id=row.account_id,
            detail={"held": row.held, "active_holds": int(row.total)},
        )
        for row in connection.execute(_HELD)
    ]
    findings += [
        Finding(
            CURRENCY_NOT_CONSERVED,
            ref=row.currency,
            detail={"currency": row.currency, "sum_of_balances": int(row.total)},
        )
        for row in connection.execute(_NOT_CONSERVED)
    ]
    return findings


# -- transfers against the ledger ----------------------------------------------


def _expected_lines(transfer: Mapping) -> dict[str, int]:
    """The net movement per account a completed transfer's entry makes."""
    amount, currency = transfer["amount"], transfer["currency"]
    kind = transfer["kind"]
    if kind == contracts.KIND_INTERNAL:
        return {transfer["from_account_id"]: -amount, transfer["to_account_id"]: amount}
    if kind == contracts.KIND_DEPOSIT:
        clearing = system_account_id(CARD_CLEARING, currency)
        return {clearing: -amount, transfer["to_account_id"]: amount}
    clearing = system_account_id(PAYOUT_CLEARING, currency)
    return {transfer["from_account_id"]: -amount, clearing: amount}


def judge_transfer(transfer: Mapping, entries: list, operations: list | None) -> list[Finding]:
    """One ended transfer against its journal entries and payments' operations.

    `entries` are (entry_id, kind, account_id, amount, currency) rows;
    `operations` payments' operations for it (None when not asked: internal).
    """
    transfer_id, status = transfer["transfer_id"], transfer["status"]
    by_entry: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry_id, _kind, account_id, amount, currency in entries:
        by_entry[entry_id][account_id] += amount
        if currency != transfer["currency"]:
            by_entry[entry_id][f"currency:{currency}"] += 1
    net: dict[str, int] = defaultdict(int)
    for lines in by_entry.values():
        for account_id, amount in lines.items():
            net[account_id] += amount
    moved = {account: amount for account, amount in net.items() if amount}
    findings = []
    if status == "completed":
        expected = _expected_lines(transfer)
        if not by_entry:
            findings.append(Finding(ENTRY_MISSING, transfer_id, detail={"kind": transfer["kind"]}))
        elif len(by_entry) > 1 and moved != expected:
            findings.append(
                Finding(ENTRY_UNEXPECTED, transfer_id, detail={"entries": sorted(by_entry)})
            )
        elif moved != expected:
            findings.append(
                Finding(
                    ENTRY_MISMATCH,
                    transfer_id,
                    entry_id=next(iter(by_entry)),
                    detail={"expected": expected, "moved": moved},
                )
            )
    elif moved:  # failed: nothing may have moved (a reversed pair nets to zero)
        findings.append(
            Finding(
                ENTRY_UNEXPECTED,
                transfer_id,
                entry_id=sorted(by_entry)[0],
                detail={"status": status, "moved": moved, "entries": sorted(by_entry)},
            )
        )
    if operations is not None:
        findings += _judge_payment(transfer, operations)
    return findings


_OPERATION_OF = {contracts.KIND_DEPOSIT: "charge", contracts.KIND_PAYOUT: "payout"}


def _judge_payment(transfer: Mapping, operations: list) -> list[Finding]:
    """A completed deposit or payout needs one succeeded operation of its amount;
    a failed one none (money taken or sent for a transfer that failed)."""
    kind = _OPERATION_OF[transfer["kind"]]
    succeeded = [op for op in operations if op["kind"] == kind and op["status"] == "succeeded"]
    completed = transfer["status"] == "completed"
    matching = [
        op
        for op in succeeded
        if op["amount"] == transfer["amount"] and op["currency"] == transfer["currency"]
    ]
    if (completed and len(matching) == 1 and len(succeeded) == 1) or (
        not completed and not succeeded
    ):
        return []
    return [
        Finding(
            PAYMENT_MISMATCH,
            transfer["transfer_id"],
            detail={
                "status": transfer["status"],
                "amount": transfer["amount"],
                "currency": transfer["currency"],
                "succeeded_operations": [
                    {k: op.get(k) for k in ("operation_id", "amount", "currency")}
                    for op in succeeded
                ],
            },
        )
    ]


def _by_transfer(rows) -> dict[str, list]:
    """Entry rows grouped by transfer, as judge_transfer takes them."""
    out: dict[str, list] = defaultdict(list)
    for row in rows:
        out[row.transfer_id].append((row.id, row.kind, row.account_id, row.amount, row.currency))
    return out


def _entries_between(connection: Connection, after: str, upto: str | None) -> dict[str, list]:
    """Entries (with their postings) of the transfers with ids in (after, upto]."""
    query = _ENTRIES_AFTER if upto is None else _ENTRIES_UPTO
    return _by_transfer(connection.execute(query, {"after": after, "upto": upto}))


def _entries_by_transfer(connection: Connection, transfer_ids: list[str]) -> dict[str, list]:
    if not transfer_ids:
        return defaultdict(list)
    return _by_transfer(connection.execute(_ENTRIES_OF, {"ids": transfer_ids}))


def _batches(items: list, size: int = _BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- a run -----------------------------------------------------------------------


@dataclass
class _Run:
    run_id: str
    full: bool
    now: datetime
    findings: list[Finding] = field(default_factory=list)
    checked: dict = field(default_factory=dict)
    cursors: dict = field(default_factory=dict)
    renewed: datetime = field(default_factory=lambda: datetime.now(UTC))


@contextmanager
def _preferring_indexes(connection: Connection) -> Iterator[None]:
    """Index lookups for the reconciler's batches, on PostgreSQL.

    With the default random_page_cost (4, for spinning disks) PostgreSQL
    answers "the entries of these 2,000 transfers" by reading every posting
    once per batch until the table is large, which made a full pass grow
    with the square of the ledger. 1.1 (the usual value for SSDs) makes it
    use the indexes, so each batch costs the same at any size. Only this
    connection, and only during the run.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql("SET random_page_cost = 1.1")
    try:
        yield
    finally:
        connection.exec_driver_sql("RESET random_page_cost")


class Reconciler:
    """Runs reconciliations against accounts' database and its peers."""

    def __init__(self, uow: UnitOfWork, peers: Peers, settings: Settings | None = None):
        self.uow = uow
        self.peers = peers
        self.settings = settings or Settings()

    def run(self, *, now: datetime, full: bool = False, trigger: str = "schedule") -> dict:
        """One run, start to end; its stored view. Conflict if another is running."""
        return self.complete(self.begin(now=now, full=full, trigger=trigger))

    def begin(self, *, now: datetime, full: bool, trigger: str) -> _Run:
        """Take the lease and record the run as running (Conflict if another is)."""
        run = _Run(str(uuid.uuid4()), full, now)
        self._start(run, trigger)
        return run

    def complete(self, run: _Run) -> dict:
        """Check, store the findings, move the cursors; a failure is stored too."""
        try:
            self._check(run)
        except Exception as exc:
            self._end(run, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._end(run)
        return get_run(self.uow, run.run_id)

    # The lease keeps two processes (or a timer and an operator) from running at once.
    def _start(self, run: _Run, trigger: str) -> None:
        until = run.now + self.settings.lease
        with self.uow.commit_on_exit() as session:
            insert_ignoring_duplicates(
                session,
                _cursors,
                {"name": _LEASE, "position": 0, "at": None, "updated_at": run.now},
            )
            taken = session.execute(
                update(_cursors)
                .where(
                    _cursors.c.name == _LEASE,
                    (_cursors.c.at.is_(None)) | (_cursors.c.at < run.now),
                )
                .values(at=until, updated_at=run.now)
            ).rowcount
            if not taken:
                raise Conflict("reconciliation_running", "A reconciliation is running.")
            # A run still "running" under an expired lease died with its process.
            session.execute(
                update(_runs)
                .where(_runs.c.status == RUNNING)
                .values(status=FAILED, finished_at=run.now, error="abandoned: its process stopped")
            )
            session.execute(
                _runs.insert().values(
                    id=run.run_id,
                    scope=FULL if run.full else INCREMENTAL,
                    trigger=trigger,
                    status=RUNNING,
                    started_at=run.now,
                    checked="{}",
                    found=0,
                    new=0,
                )
            )

    def _renew_lease(self, run: _Run) -> None:
        """A long run (a full pass over a large ledger) keeps its lease: at most
        once a minute, it moves the lease's end to a whole lease from now."""
        now = datetime.now(UTC)
        if now - run.renewed < timedelta(minutes=1):
            return
        run.renewed = now
        with self.uow.commit_on_exit() as session:
            session.execute(
                update(_cursors)
                .where(_cursors.c.name == _LEASE)
                .values(at=now + self.settings.lease, updated_at=now)
            )

    def _cursor(self, connection: Connection, name: str):
        return connection.execute(
            select(_cursors.c.position, _cursors.c.at).where(_cursors.c.name == name)
        ).first()

    def _check(self, run: _Run) -> None:
        with self.uow.read() as connection, _preferring_indexes(connection):
            self._check_ledger(connection, run)
            run.findings += check_balances(connection)
            self._check_transfers(connection, run)
            self._check_holds(connection, run)
            start = self._cursor(connection, _PROVIDER)
        run.findings += [
            Finding(
                TRANSFER_STUCK,
                row["transfer_id"],
                detail={k: row[k] for k in ("kind", "amount", "currency", "deadline")},
            )
            for row in self.peers.stuck_transfers(int(self.settings.lag.total_seconds()), 500)
        ]
        self._check_provider(run, start.at if start else None)

    def _check_ledger(self, connection: Connection, run: _Run) -> None:
        before = run.now - self.settings.lag
        hi = connection.execute(_LAST_POSTING_BEFORE, {"before": before}).scalar() or 0
        cursor = None if run.full else self._cursor(connection, _POSTINGS)
        lo = start = cursor.position if cursor else 0
        if run.full:  # every entry at once: one pass over the postings
            run.findings += check_entries(connection)
        while lo < hi:
            upto = min(lo + self.settings.chunk, hi)
            if run.full:  # entries: check_entries above, and _check_all_transfers
                run.findings += check_postings(connection, lo, upto, [])
            else:
                entry_ids = entries_posted(connection, lo, upto)
                run.findings += check_postings(connection, lo, upto, entry_ids)
                self._check_posted_transfers(connection, run, transfers_of(connection, entry_ids))
            lo = upto
            self._renew_lease(run)
        if run.full:
            run.findings += check_balance_sums(connection)
        run.checked["postings"] = {"after": start, "upto": max(hi, start)}
        run.cursors[_POSTINGS] = max(hi, start)

    def _check_posted_transfers(self, connection: Connection, run: _Run, posted: list) -> None:
        """Entries posted in the window: their transfers must have completed or be in flight."""
        for batch in _batches(posted):
            states = self.peers.transfer_states(batch)
            failed = [t for t in batch if states.get(t, {}).get("status") == "failed"]
            entries = _entries_by_transfer(connection, failed)
            for transfer_id in batch:
                state = states.get(transfer_id)
                if state is None:
                    run.findings.append(
                        Finding(ENTRY_UNEXPECTED, transfer_id, detail={"status": "unknown"})
                    )
                elif state["status"] == "failed":
                    run.findings += judge_transfer(state, entries[transfer_id], None)

    def _check_all_transfers(self, connection: Connection, run: _Run) -> None:
        """Full pass: every ended transfer and every entry, walked in transfer-id order.

        Each page of transactions' ended transfers names an id range; accounts'
        entries and payments' operations for that range come by range scans,
        so the pass reads each side once, whatever the ledger's size.
        """
        after, count = "", 0
        while True:
            page = self.peers.ended_transfers_by_id(after, _BATCH)
            transfers = page["transfers"]
            upto = transfers[-1]["transfer_id"] if page["more"] else None
            entries = _entries_between(connection, after, upto)
            operations = self.peers.operations_between(after, upto)
            ended = set()
            for transfer in transfers:
                transfer_id = transfer["transfer_id"]
                ended.add(transfer_id)
                ops = operations.get(transfer_id, []) if transfer["kind"] in _OPERATION_OF else None
                run.findings += judge_transfer(transfer, entries.get(transfer_id, []), ops)
            # Entries of transfers not ended: in flight, or unknown to transactions.
            self._check_posted_transfers(connection, run, sorted(set(entries) - ended))
            count += len(transfers)
            if upto is None:
                break
            after = upto
            self._renew_lease(run)
        run.checked["all_transfers"] = {"ended": count}

    def _check_transfers(self, connection: Connection, run: _Run) -> None:
        if run.full:
            self._check_all_transfers(connection, run)
        cursor = self._cursor(connection, _TRANSFERS)
        after = start = cursor.position if cursor else 0
        settled = int(self.settings.lag.total_seconds())
        count = 0
        while True:
            page = self.peers.ended_transfers(after, _BATCH, settled)
            transfers = page["transfers"]
            ids = [t["transfer_id"] for t in transfers]
            entries = _entries_by_transfer(connection, ids)
            paid = [t["transfer_id"] for t in transfers if t["kind"] in _OPERATION_OF]
            operations = self.peers.operations_for_transfers(paid) if paid else {}
            for transfer in transfers:
                ops = (
                    operations.get(transfer["transfer_id"], [])
                    if transfer["kind"] in (_OPERATION_OF)
                    else None
                )
                run.findings += judge_transfer(transfer, entries[transfer["transfer_id"]], ops)
            count += len(transfers)
            after = page["next_after"]
            if not page["more"]:
                break
        run.checked["transfers"] = {"after": start, "upto": after, "ended": count}
        run.cursors[_TRANSFERS] = after

    def _check_holds(self, connection: Connection, run: _Run) -> None:
        holds = connection.execute(_ACTIVE_HOLDS, {"before": run.now - self.settings.lag}).all()
        for batch in _batches(holds):
            states = self.peers.transfer_states(sorted({h.transfer_id for h in batch}))
            for hold in batch:
                state = states.get(hold.transfer_id)
                if state is not None and state["status"] != "pending":
                    run.findings.append(
                        Finding(
                            HOLD_FOR_ENDED_TRANSFER,
                            hold.transfer_id,
                            account_id=hold.account_id,
                            detail={
                                "hold_id": hold.id,
                                "amount": hold.amount,
                                "currency": hold.currency,
                                "transfer_status": state["status"],
                            },
                        )
                    )
        run.checked["active_holds"] = len(holds)

    def _check_provider(self, run: _Run, since: datetime | None) -> None:
        until = run.now - self.settings.provider_lag
        since = since or until - self.settings.provider_first_window
        start, checked = since, defaultdict(int)
        while since < until:
            upto = min(since + _PROVIDER_WINDOW, until)
            answer = self.peers.reconcile_provider(since.isoformat(), upto.isoformat())
            for key, value in answer.get("checked", {}).items():
                checked[key] += value
            run.findings += [_provider_finding(d) for d in answer["discrepancies"]]
            since = upto
        run.checked["provider"] = {
            "since": start.isoformat(),
            "until": since.isoformat(),
            **checked,
        }
        run.cursors[_PROVIDER] = since

    def _end(self, run: _Run, error: str | None = None) -> None:
        """Store the findings and move the cursors (only when the run completed)."""
        finished = datetime.now(UTC)
        with self.uow.commit_on_exit() as session:
            connection = session.connection()
            new = 0
            if error is None:
                new = _store(connection, run, finished)
                for name, value in run.cursors.items():
                    _move_cursor(session, name, value, finished)
            connection.execute(
                update(_runs)
                .where(_runs.c.id == run.run_id)
                .values(
                    status=FAILED if error else COMPLETED,
                    finished_at=finished,
                    checked=json.dumps(run.checked, sort_keys=True),
                    found=len({f.fingerprint for f in run.findings}) if error is None else 0,
                    new=new,
                    error=error,
                )
            )
            connection.execute(
                update(_cursors)
                .where(_cursors.c.name == _LEASE)
                .values(at=None, updated_at=finished)
            )
        if error is None and run.findings:
            log.warning(
                "reconciliation found discrepancies",
                extra={
                    "run_id": run.run_id,
                    "kinds": sorted({f.kind for f in run.findings}),
                    "new": new,
                },
            )


def _provider_finding(discrepancy: Mapping) -> Finding:
    return Finding(
        discrepancy["kind"],
        discrepancy.get("transfer_id"),
        ref=discrepancy.get("idempotency_key") or discrepancy.get("provider_reference") or "",
        detail={
            k: discrepancy.get(k)
            for k in ("operation_id", "idempotency_key", "provider_reference", "detail")
        },
    )


def _move_cursor(session, name: str, value, now: datetime) -> None:
    position, at = (0, value) if isinstance(value, datetime) else (value, None)
    row = {"name": name, "position": position, "at": at, "updated_at": now}
    if not insert_ignoring_duplicates(session, _cursors, row):
        session.execute(
            update(_cursors)
            .where(_cursors.c.name == name)
            .values(position=position, at=at, updated_at=now)
        )


def _store(connection: Connection, run: _Run, now: datetime) -> int:
    """Open what is new, note again what is still open, clear what is gone."""
    unique = {f.fingerprint: f for f in run.findings}
    open_rows = dict(
        connection.execute(
            select(_discrepancies.c.fingerprint, _discrepancies.c.id).where(
                _discrepancies.c.status == OPEN
            )
        ).all()
    )
    new = [f for fp, f in unique.items() if fp not in open_rows]
    if new:
        connection.execute(
            _discrepancies.insert(),
            [
                {
                    "id": str(uuid.uuid4()),
                    "fingerprint": f.fingerprint[:300],
                    "kind": f.kind,
                    "status": OPEN,
                    "transfer_id": f.transfer_id,
                    "account_id": f.account_id,
                    "entry_id": f.entry_id,
                    "detail": json.dumps(f.detail, sort_keys=True, default=str),
                    "first_run_id": run.run_id,
                    "last_run_id": run.run_id,
                    "found_at": now,
                    "last_seen_at": now,
                }
                for f in new
            ],
        )
    seen_again = [open_rows[fp] for fp in unique if fp in open_rows]
    for batch in _batches(seen_again):
        connection.execute(
            update(_discrepancies)
            .where(_discrepancies.c.id.in_(batch))
            .values(last_run_id=run.run_id, last_seen_at=now)
        )
    rechecked = EVERY_RUN_KINDS + ((LEDGER_KINDS + TRANSFER_KINDS) if run.full else ())
    gone = [
        discrepancy_id
        for fp, discrepancy_id in open_rows.items()
        if fp not in unique and fp.split(":", 1)[0] in rechecked
    ]
    for batch in _batches(gone):
        connection.execute(
            update(_discrepancies)
            .where(_discrepancies.c.id.in_(batch))
            .values(status=CLEARED, closed_at=now, closed_by="reconciliation")
        )
    return len(new)


# -- what operators see ----------------------------------------------------------


def _run_view(row) -> dict:
    return {
        "run_id": row.id,
        "scope": row.scope,
        "trigger": row.trigger,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "checked": json.loads(row.checked or "{}"),
        "discrepancies_found": row.found,
        "discrepancies_new": row.new,
        "error": row.error,
    }


def _discrepancy_view(row) -> dict:
    return {
        "discrepancy_id": row.id,
        "kind": row.kind,
        "status": row.status,
        "transfer_id": row.transfer_id,
        "account_id": row.account_id,
        "entry_id": row.entry_id,
        "detail": json.loads(row.detail or "{}"),
        "first_run_id": row.first_run_id,
        "last_run_id": row.last_run_id,
        "found_at": row.found_at.isoformat(),
        "last_seen_at": row.last_seen_at.isoformat(),
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
        "closed_by": row.closed_by,
        "note": row.note,
    }


def list_runs(uow: UnitOfWork, limit: int = 20) -> list[dict]:
    with uow.read() as connection:
        rows = connection.execute(
            select(_runs).order_by(_runs.c.started_at.desc(), _runs.c.id).limit(limit)
        ).all()
    return [_run_view(row) for row in rows]


def get_run(uow: UnitOfWork, run_id: str) -> dict:
    """A run and the discrepancies it found (new in it, or seen again by it)."""
    with uow.read() as connection:
        row = connection.execute(select(_runs).where(_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound("run_not_found", "No such reconciliation run.")
        found = connection.execute(
            select(_discrepancies)
            .where(
                (_discrepancies.c.first_run_id == run_id) | (_discrepancies.c.last_run_id == run_id)
            )
            .order_by(_discrepancies.c.kind, _discrepancies.c.found_at, _discrepancies.c.id)
            .limit(1000)
        ).all()
    return {**_run_view(row), "discrepancies": [_discrepancy_view(d) for d in found]}


def list_discrepancies(
    uow: UnitOfWork, status: str | None = OPEN, kind: str | None = None, limit: int = 200
) -> list[dict]:
    query = select(_discrepancies)
    if status:
        query = query.where(_discrepancies.c.status == status)
    if kind:
        query = query.where(_discrepancies.c.kind == kind)
    query = query.order_by(_discrepancies.c.found_at.desc(), _discrepancies.c.id).limit(limit)
    with uow.read() as connection:
        return [_discrepancy_view(row) for row in connection.execute(query)]


def resolve(uow: UnitOfWork, discrepancy_id: str, by: str, note: str, now: datetime) -> dict:
    """An operator closes an open discrepancy, saying what was done about it."""
    with uow.commit_on_exit() as session:
        connection = session.connection()
        done = connection.execute(
            update(_discrepancies)
            .where(_discrepancies.c.id == discrepancy_id, _discrepancies.c.status == OPEN)
            .values(status=RESOLVED, closed_at=now, closed_by=by[:64], note=note[:500])
        ).rowcount
        row = connection.execute(
            select(_discrepancies).where(_discrepancies.c.id == discrepancy_id)
        ).first()
    if row is None:
        raise NotFound("discrepancy_not_found", "No such discrepancy.")
    if not done:
        raise Conflict("discrepancy_closed", f"The discrepancy is already {row.status}.")
    return _discrepancy_view(row)


def open_counts(connection: Connection) -> dict[str, int]:
    """Open discrepancies per kind (every kind, 0 when none): for the metrics."""
    counts = dict.fromkeys(KINDS, 0)
    rows = connection.execute(
        select(_discrepancies.c.kind, func.count())
        .where(_discrepancies.c.status == OPEN)
        .group_by(_discrepancies.c.kind)
    )
    counts.update(dict(rows.all()))
    return counts


def last_runs(connection: Connection) -> tuple[datetime | None, bool]:
    """When the last completed run finished, and whether the latest run failed."""
    completed = connection.execute(
        select(func.max(_runs.c.finished_at)).where(_runs.c.status == COMPLETED)
    ).scalar()
    latest = connection.execute(
        select(_runs.c.status)
        .where(_runs.c.status != RUNNING)
        .order_by(_runs.c.started_at.desc())
        .limit(1)
    ).scalar()
    return completed, latest == FAILED


def full_pass_due(uow: UnitOfWork, now: datetime, every: timedelta) -> bool:
    """No full pass has completed within `every`."""
    with uow.read() as connection:
        latest = connection.execute(
            select(func.max(_runs.c.started_at)).where(
                _runs.c.scope == FULL, _runs.c.status == COMPLETED
            )
        ).scalar()
    return latest is None or latest <= now - every


# -- the daily report --------------------------------------------------------------

_CUSTOMER_POSTINGS_SINCE = text(
    """
    SELECT p.currency, e.kind, sum(p.amount) AS total,
           sum(CASE WHEN p.created_at < :end THEN p.amount ELSE 0 END) AS in_day,
           sum(CASE WHEN p.created_at < :end AND p.amount > 0 THEN p.amount ELSE 0 END)
               AS credited_in_day,
           count(DISTINCT CASE WHEN p.created_at < :end THEN e.id END) AS entries_in_day
    FROM postings p
    JOIN journal_entries e ON e.id = p.entry_id
    JOIN accounts a ON a.id = p.account_id
    WHERE p.created_at >= :start AND a.kind <> :system
    GROUP BY p.currency, e.kind
    """
).bindparams(bindparam("start", type_=UtcDateTime), bindparam("end", type_=UtcDateTime))

_CUSTOMER_TOTALS = text(
    "SELECT b.currency, sum(b.balance) AS total FROM balances b "
    "JOIN accounts a ON a.id = b.account_id WHERE a.kind <> :system GROUP BY b.currency"
)


def daily_ledger(uow: UnitOfWork, start: datetime) -> dict[str, dict]:
    """Per currency, the customers' money on one UTC day: opening, in, out, closing.

    Read from the postings since the day began and today's balances (so its
    cost is the postings since then, not the whole ledger).
    """
    end = start + timedelta(days=1)
    params = {"start": start, "end": end, "system": AccountKind.SYSTEM}
    with uow.read() as connection:
        totals = dict(connection.execute(_CUSTOMER_TOTALS, params).all())
        rows = connection.execute(_CUSTOMER_POSTINGS_SINCE, params).all()
    report: dict[str, dict] = {}
    for currency, total in totals.items():
        report[currency] = {
            "now": int(total),
            "since_start": 0,
            "since_end": 0,
            "deposits": 0,
            "deposits_count": 0,
            "payouts": 0,
            "payouts_count": 0,
            "internal_volume": 0,
            "internal_count": 0,
        }
    for row in rows:
        day = report[row.currency]
        day["since_start"] += int(row.total)
        day["since_end"] += int(row.total) - int(row.in_day)
        if row.kind == contracts.KIND_DEPOSIT:
            day["deposits"] += int(row.in_day)
            day["deposits_count"] += int(row.entries_in_day)
        elif row.kind == contracts.KIND_PAYOUT:
            day["payouts"] += -int(row.in_day)
            day["payouts_count"] += int(row.entries_in_day)
        elif row.kind == contracts.KIND_INTERNAL:
            day["internal_volume"] += int(row.credited_in_day)
            day["internal_count"] += int(row.entries_in_day)
    for day in report.values():
        day["opening"] = day["now"] - day.pop("since_start")
        day["closing"] = day.pop("now") - day.pop("since_end")
    return report


REPORT_COLUMNS = (
    "day",
    "currency",
    "opening_balance",
    "deposits_credited",
    "deposits_count",
    "payouts_captured",
    "payouts_count",
    "internal_volume",
    "internal_count",
    "closing_balance",
    "balanced",
    "provider_charges_succeeded",
    "provider_charges_count",
    "provider_payouts_succeeded",
    "provider_payouts_count",
    "deposits_unmatched",
    "payouts_unmatched",
)


def daily_report(uow: UnitOfWork, peers: Peers, day: date) -> dict:
    """Per currency, the customers' money on a UTC day, matched against the provider.

    `balanced` says closing = opening + deposits - payouts (internal transfers
    move money between customers and net to zero). `*_unmatched` is the
    ledger's amount minus the provider's: money charged late on the day before
    and credited on this one (or the reverse) shows there, in flight, and
    should not repeat the next day.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    ledger = daily_ledger(uow, start)
    rows = []
    for currency in sorted(ledger):
        book = ledger[currency]
        provider = peers.provider_totals(day.isoformat(), currency)["provider"]
        charges, payouts = provider["charges_succeeded"], provider["payouts_succeeded"]
        balanced = book["closing"] == book["opening"] + book["deposits"] - book["payouts"]
        amounts = {
            "opening_balance": book["opening"],
            "deposits_credited": book["deposits"],
            "payouts_captured": book["payouts"],
            "internal_volume": book["internal_volume"],
            "closing_balance": book["closing"],
            "provider_charges_succeeded": charges["amount"],
            "provider_payouts_succeeded": payouts["amount"],
            "deposits_unmatched": book["deposits"] - charges["amount"],
            "payouts_unmatched": book["payouts"] - payouts["amount"],
        }
        rows.append(
            {
                "day": day.isoformat(),
                "currency": currency,
                **{key: format_minor(value, currency) for key, value in amounts.items()},
                "deposits_count": book["deposits_count"],
                "payouts_count": book["payouts_count"],
                "internal_count": book["internal_count"],
                "provider_charges_count": charges["count"],
                "provider_payouts_count": payouts["count"],
                "balanced": balanced,
            }
        )
    return {"day": day.isoformat(), "columns": list(REPORT_COLUMNS), "rows": rows}

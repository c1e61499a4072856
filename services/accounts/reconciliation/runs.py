"""A reconciliation run: the lease that keeps it single, the cursors that
make it incremental, the checks in order, and its findings stored as
discrepancies (opened, kept, or cleared when no longer seen)."""

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection

from services.accounts.domain import HoldStatus
from services.accounts.models import (
    Discrepancy,
    Hold,
    ReconciliationCursor,
    ReconciliationRun,
)
from services.accounts.reconciliation.findings import (
    BATCH,
    CLEARED,
    COMPLETED,
    ENTRY_UNEXPECTED,
    EVERY_RUN_KINDS,
    FAILED,
    FULL,
    HOLD_FOR_ENDED_TRANSFER,
    INCREMENTAL,
    LEDGER_KINDS,
    OPEN,
    RUNNING,
    TRANSFER_KINDS,
    TRANSFER_STUCK,
    Finding,
    Peers,
    Settings,
    batches,
)
from services.accounts.reconciliation.ledger_checks import (
    check_balance_sums,
    check_balances,
    check_entries,
    check_postings,
    entries_posted,
)
from services.accounts.reconciliation.transfers import (
    OPERATION_OF,
    entries_between,
    entries_by_transfer,
    judge_transfer,
    transfers_of,
)
from services.accounts.reconciliation.views import get_run
from shared.database import UnitOfWork, insert_ignoring_duplicates
from shared.errors import Conflict
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

_holds = Hold.__table__
_runs = ReconciliationRun.__table__
_discrepancies = Discrepancy.__table__
_cursors = ReconciliationCursor.__table__
_POSTINGS, _TRANSFERS, _PROVIDER, _LEASE = "postings", "transfers", "provider", "lease"
_PROVIDER_WINDOW = timedelta(days=7)  # the most payments compares in one call
_LAST_POSTING_BEFORE = text("SELECT max(id) FROM postings WHERE created_at < :before").bindparams(
    bindparam("before", type_=UtcDateTime)
)

_ACTIVE_HOLDS = select(
    _holds.c.id, _holds.c.transfer_id, _holds.c.account_id, _holds.c.amount, _holds.c.currency
).where(_holds.c.status == HoldStatus.ACTIVE, _holds.c.created_at < bindparam("before"))


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
        for batch in batches(posted):
            states = self.peers.transfer_states(batch)
            failed = [t for t in batch if states.get(t, {}).get("status") == "failed"]
            entries = entries_by_transfer(connection, failed)
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
            page = self.peers.ended_transfers_by_id(after, BATCH)
            transfers = page["transfers"]
            upto = transfers[-1]["transfer_id"] if page["more"] else None
            entries = entries_between(connection, after, upto)
            operations = self.peers.operations_between(after, upto)
            ended = set()
            for transfer in transfers:
                transfer_id = transfer["transfer_id"]
                ended.add(transfer_id)
                ops = operations.get(transfer_id, []) if transfer["kind"] in OPERATION_OF else None
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
            page = self.peers.ended_transfers(after, BATCH, settled)
            transfers = page["transfers"]
            ids = [t["transfer_id"] for t in transfers]
            entries = entries_by_transfer(connection, ids)
            paid = [t["transfer_id"] for t in transfers if t["kind"] in OPERATION_OF]
            operations = self.peers.operations_for_transfers(paid) if paid else {}
            for transfer in transfers:
                ops = (
                    operations.get(transfer["transfer_id"], [])
                    if transfer["kind"] in (OPERATION_OF)
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
        for batch in batches(holds):
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
    for batch in batches(seen_again):
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
    for batch in batches(gone):
        connection.execute(
            update(_discrepancies)
            .where(_discrepancies.c.id.in_(batch))
            .values(status=CLEARED, closed_at=now, closed_by="reconciliation")
        )
    return len(new)

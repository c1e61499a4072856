"""What operators see: runs, discrepancies, resolving one with a note, and
the figures the metrics export."""

import json
import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from services.accounts.models import (
    Discrepancy,
    ReconciliationRun,
)
from services.accounts.reconciliation.findings import (
    COMPLETED,
    FAILED,
    FULL,
    KINDS,
    OPEN,
    RESOLVED,
    RUNNING,
)
from shared.database import UnitOfWork
from shared.errors import Conflict, NotFound

log = logging.getLogger(__name__)

_runs = ReconciliationRun.__table__
_discrepancies = Discrepancy.__table__


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

"""The ledger checked against itself, by SQL next to the data: balanced
entries, unbroken balance chains, balances against their postings, `held`
against active holds, and every currency summing to zero."""

import logging

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import Connection

from services.accounts.models import (
    Posting,
)
from services.accounts.reconciliation.findings import (
    BALANCE_CHAIN_BROKEN,
    BALANCE_MISMATCH,
    CURRENCY_NOT_CONSERVED,
    ENTRY_UNBALANCED,
    HELD_MISMATCH,
    Finding,
    batches,
)

log = logging.getLogger(__name__)


_postings = Posting.__table__

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


def entries_posted(connection: Connection, lo: int, hi: int) -> list[str]:
    """The journal entries with a posting in (lo, hi]."""
    return [row[0] for row in connection.execute(_ENTRIES_POSTED, {"lo": lo, "hi": hi})]


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


def check_entries(connection: Connection) -> list[Finding]:
    """Full pass: every journal entry's postings, per currency."""
    return _unbalanced(connection.execute(_ALL_UNBALANCED))


def check_postings(connection: Connection, lo: int, hi: int, entry_ids: list[str]) -> list[Finding]:
    """The given entries (those with a posting in the window), the balance chain
    and touched balances for postings (lo, hi]."""
    findings = [
        finding
        for batch in batches(entry_ids)
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

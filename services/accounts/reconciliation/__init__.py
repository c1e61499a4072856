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

Its rooms: `findings` (kinds, states, settings, the peers asked),
`ledger_checks`, `transfers` (transfers against the ledger), `runs` (the
Reconciler: lease, cursors, checks in order, stored discrepancies), `views`
(what operators see) and `report` (the daily report). What the service,
the metrics and the tests use is named here.
"""

from services.accounts.reconciliation.findings import (
    BALANCE_CHAIN_BROKEN,
    BALANCE_MISMATCH,
    CURRENCY_NOT_CONSERVED,
    ENTRY_MISSING,
    ENTRY_UNBALANCED,
    HELD_MISMATCH,
    KINDS,
    Finding,
    Settings,
)
from services.accounts.reconciliation.ledger_checks import (
    check_balance_sums,
    check_balances,
    check_entries,
    check_postings,
    entries_posted,
)
from services.accounts.reconciliation.report import daily_report
from services.accounts.reconciliation.runs import Reconciler
from services.accounts.reconciliation.transfers import judge_transfer
from services.accounts.reconciliation.views import (
    full_pass_due,
    get_run,
    last_runs,
    list_discrepancies,
    list_runs,
    open_counts,
    resolve,
)

__all__ = [
    "BALANCE_CHAIN_BROKEN",
    "BALANCE_MISMATCH",
    "CURRENCY_NOT_CONSERVED",
    "ENTRY_MISSING",
    "ENTRY_UNBALANCED",
    "HELD_MISMATCH",
    "KINDS",
    "Finding",
    "Reconciler",
    "Settings",
    "check_balance_sums",
    "check_balances",
    "check_entries",
    "check_postings",
    "daily_report",
    "entries_posted",
    "full_pass_due",
    "get_run",
    "judge_transfer",
    "last_runs",
    "list_discrepancies",
    "list_runs",
    "open_counts",
    "resolve",
]

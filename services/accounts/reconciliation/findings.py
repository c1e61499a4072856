"""What a reconciliation run can find, and what it is given: the kinds of
discrepancy, a run's and a discrepancy's states, its settings, and the
peers it asks (transactions and payments, over RPC in the service)."""

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from shared import config

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

BATCH = 2000  # transfers asked about per RPC (the most the peers take)


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


def batches(items: list, size: int = BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

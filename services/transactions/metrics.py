"""transactions' figures for Prometheus: the saga's outcomes, as their owner decides them.

    transfers_ended_total{kind, status, reason}     completed (reason "") or failed, by reason
    transfer_saga_duration_seconds{kind, status}    from the request to the end (histogram)

Counted in the process that commits the end, once that commit succeeded
(a step that rolls back counts nothing; a duplicate delivery finds the
transfer ended and ends nothing). Served with every service's metrics on
TRANSACTIONS_METRICS_PORT (shared.metrics): sum() across processes.
"""

from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from services.transactions.domain import COMPLETED, Transfer
from shared import contracts
from shared.metrics import REGISTRY

# Failure reasons are the contract's: anything else is "other" (bounded labels).
REASONS = frozenset(
    {
        contracts.REASON_INSUFFICIENT_FUNDS,
        contracts.REASON_RISK_REJECTED,
        contracts.REASON_CARD_DECLINED,
        contracts.REASON_PAYOUT_FAILED,
        contracts.REASON_PROVIDER_UNAVAILABLE,
        contracts.REASON_ACCOUNT_UNAVAILABLE,
        contracts.REASON_TIMED_OUT,
    }
)

TRANSFERS_ENDED = Counter(
    "transfers_ended",
    "Transfers that ended, by kind, status (completed, failed) and failure reason",
    ["kind", "status", "reason"],
    registry=REGISTRY,
)
SAGA_DURATION = Histogram(
    "transfer_saga_duration_seconds",
    "Time from a transfer's request to its end",
    ["kind", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
    registry=REGISTRY,
)


def transfer_ended(transfer: Transfer, now: datetime) -> None:
    kind = transfer.kind if transfer.kind in contracts.KINDS else "other"
    status = transfer.status
    reason = ""
    if status != COMPLETED:
        reason = transfer.failure_reason if transfer.failure_reason in REASONS else "other"
    TRANSFERS_ENDED.labels(kind, status, reason).inc()
    try:
        started = datetime.fromisoformat(transfer.created_at)
    except (TypeError, ValueError):
        return
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    SAGA_DURATION.labels(kind, status).observe(max(0.0, (now - started).total_seconds()))

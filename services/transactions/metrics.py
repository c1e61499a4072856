"""transactions' figures for Prometheus: the saga's outcomes, as their owner decides them.

    transfers_ended_total{kind, status, reason}     completed (reason "") or failed, by reason
    transfer_saga_duration_seconds{kind, status}    from the request to the end (histogram)
    transfers_pending                               transfers not ended yet (read at scrape time)
    transfers_overdue                               pending past their deadline
    transfers_oldest_overdue_seconds                how far past it the oldest is (0 when none)

The first two are counted in the process that commits the end, once that
commit succeeded (a step that rolls back counts nothing; a duplicate
delivery finds the transfer ended and ends nothing): sum() across
processes. The others are read from the read model, the same in every
process: max(). Served with every service's metrics on
TRANSACTIONS_METRICS_PORT (shared.metrics).

A transfer past its deadline is failed by the deadline timer within
seconds, unless a payment provider may be moving its money (a deposit, a
payout whose funds are reserved): those wait for the provider's answer,
which payments keeps asking for. So `transfers_oldest_overdue_seconds`
stays near zero, and a growing value is money stuck (the SLO "no money
stuck pending", docs/SLO.md).
"""

import logging
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import bindparam, func, select

from services.transactions.domain import COMPLETED, PENDING, Transfer
from services.transactions.models import TransferView
from shared import contracts
from shared.metrics import REGISTRY, MetricsEndpoint, age_seconds
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

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
    SAGA_DURATION.labels(kind, status).observe(age_seconds(started, now))


_PENDING = select(func.count()).where(TransferView.status == PENDING)
_OVERDUE = select(func.count(), func.min(TransferView.deadline)).where(
    TransferView.status == PENDING, TransferView.deadline < bindparam("now", type_=UtcDateTime)
)


class PendingCollector:
    """Pending and overdue transfers, read at scrape time (two index reads)."""

    def __init__(self, engine):
        self._engine = engine

    def collect(self):
        try:
            with self._engine().connect() as connection:
                pending = connection.execute(_PENDING).scalar_one()
                now = datetime.now(UTC)
                overdue, oldest = connection.execute(_OVERDUE, {"now": now}).one()
        except Exception:
            log.exception("could not read the pending transfers")
            return
        yield GaugeMetricFamily("transfers_pending", "Transfers not ended yet", value=pending)
        yield GaugeMetricFamily(
            "transfers_overdue", "Pending transfers past their deadline", value=overdue
        )
        yield GaugeMetricFamily(
            "transfers_oldest_overdue_seconds",
            "How far past its deadline the oldest pending transfer is (0 when none)",
            value=age_seconds(oldest, now),
        )


class TransactionsMetrics(MetricsEndpoint):
    """transactions' endpoint: every service's metrics and the pending transfers."""

    def collectors(self, engine):
        return (PendingCollector(engine),)

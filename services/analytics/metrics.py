"""Business metrics for Prometheus, read from the projections at scrape time.

The values live in analytics' tables (transfer_totals, anomalies), not in
process memory, so they are the same in every analytics process, survive
restarts and stay right across a rebuild (a replay writes the same rows).
Prometheus scrapes each process; aggregate across processes with max(),
not sum().

    analytics_transfers_completed_total{kind, currency}
    analytics_transfer_volume_minor_total{kind, currency}        completed, minor units
    analytics_transfers_failed_total{kind, currency, reason}
    analytics_failed_volume_minor_total{kind, currency, reason}
    analytics_anomalies_flagged_total{currency}
    analytics_metrics_up                                          1 when the query worked

ANALYTICS_METRICS_PORT (default 9102; 0 disables) and ANALYTICS_METRICS_ADDR
(default 127.0.0.1) place the HTTP endpoint (shared.metrics); each scrape runs
one short query.
"""

import logging
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.analytics.models import FlaggedTransfer, TransferTotal
from services.analytics.projections import COMPLETED, FAILED
from shared.metrics import MetricsEndpoint, port_setting

log = logging.getLogger(__name__)

PORT_KEY = "ANALYTICS_METRICS_PORT"
ADDR_KEY = "ANALYTICS_METRICS_ADDR"
DEFAULT_PORT = 9102


class ProjectionCollector:
    """A custom collector: one query against the projections per scrape."""

    def __init__(self, engine: Callable[[], Engine]):
        self._engine = engine

    def collect(self):
        up = GaugeMetricFamily(
            "analytics_metrics_up", "1 when the business metrics could be read from the database"
        )
        try:
            totals, flagged = self._read()
        except Exception:
            log.exception("could not read the business metrics")
            up.add_metric([], 0)
            yield up
            return
        completed = CounterMetricFamily(
            "analytics_transfers_completed", "Transfers completed", labels=["kind", "currency"]
        )
        volume = CounterMetricFamily(
            "analytics_transfer_volume_minor",
            "Volume of completed transfers, in minor units of the currency",
            labels=["kind", "currency"],
        )
        failed = CounterMetricFamily(
            "analytics_transfers_failed",
            "Transfers failed, by reason",
            labels=["kind", "currency", "reason"],
        )
        failed_volume = CounterMetricFamily(
            "analytics_failed_volume_minor",
            "Volume of failed transfers, in minor units of the currency",
            labels=["kind", "currency", "reason"],
        )
        anomalies = CounterMetricFamily(
            "analytics_anomalies_flagged", "Outflows flagged as unusual", labels=["currency"]
        )
        for outcome, kind, currency, reason, count, amount in totals:
            if outcome == COMPLETED:
                completed.add_metric([kind, currency], count)
                volume.add_metric([kind, currency], amount)
            elif outcome == FAILED:
                failed.add_metric([kind, currency, reason], count)
                failed_volume.add_metric([kind, currency, reason], amount)
        for currency, count in flagged:
            anomalies.add_metric([currency], count)
        up.add_metric([], 1)
        yield from (completed, volume, failed, failed_volume, anomalies, up)

    def _read(self):
        with self._engine().connect() as conn:
            totals = conn.execute(
                select(
                    TransferTotal.outcome,
                    TransferTotal.kind,
                    TransferTotal.currency,
                    TransferTotal.reason,
                    TransferTotal.count,
                    TransferTotal.amount,
                ).order_by(
                    TransferTotal.outcome,
                    TransferTotal.kind,
                    TransferTotal.currency,
                    TransferTotal.reason,
                )
            ).all()
            flagged = conn.execute(
                select(FlaggedTransfer.currency, func.count())
                .group_by(FlaggedTransfer.currency)
                .order_by(FlaggedTransfer.currency)
            ).all()
        return totals, flagged


def metrics_port(container_config) -> int:
    return port_setting(container_config, PORT_KEY, DEFAULT_PORT)


class BusinessMetrics(MetricsEndpoint):
    """analytics' endpoint (ANALYTICS_METRICS_PORT): every service's metrics and
    the business figures."""

    def collectors(self, engine):
        return (ProjectionCollector(engine),)

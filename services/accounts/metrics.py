"""Reconciliation metrics for Prometheus, read from accounts' database at scrape time.

    reconciliation_discrepancies{kind}               open discrepancies (every kind, 0 when none)
    reconciliation_last_success_timestamp_seconds    when the last completed run finished
    reconciliation_last_run_failed                   1 when the latest run could not complete
    reconciliation_up                                1 when these could be read

ACCOUNTS_METRICS_PORT (default 9103; 0 disables) and ACCOUNTS_METRICS_ADDR
place the endpoint, which serves every service's metrics too (shared.metrics).
Every accounts process serves the same values: aggregate with max().
Alerts: ops/prometheus/rules/reconciliation.yml.
"""

import logging

from prometheus_client.core import GaugeMetricFamily

from services.accounts import reconciliation
from shared.metrics import MetricsEndpoint

log = logging.getLogger(__name__)


class ReconciliationCollector:
    def __init__(self, engine):
        self._engine = engine

    def collect(self):
        up = GaugeMetricFamily("reconciliation_up", "1 when the reconciliation state could be read")
        try:
            with self._engine().connect() as connection:
                counts = reconciliation.open_counts(connection)
                last_success, last_failed = reconciliation.last_runs(connection)
        except Exception:
            log.exception("could not read the reconciliation metrics")
            up.add_metric([], 0)
            yield up
            return
        discrepancies = GaugeMetricFamily(
            "reconciliation_discrepancies",
            "Open reconciliation discrepancies, by kind",
            labels=["kind"],
        )
        for kind, count in sorted(counts.items()):
            discrepancies.add_metric([kind], count)
        yield discrepancies
        if last_success is not None:
            yield GaugeMetricFamily(
                "reconciliation_last_success_timestamp_seconds",
                "Unix time the last completed reconciliation run finished",
                value=last_success.timestamp(),
            )
        yield GaugeMetricFamily(
            "reconciliation_last_run_failed",
            "1 when the latest reconciliation run could not complete",
            value=1 if last_failed else 0,
        )
        up.add_metric([], 1)
        yield up


class ReconciliationMetrics(MetricsEndpoint):
    """accounts' endpoint: every service's metrics and the reconciliation's."""

    def collectors(self, engine):
        return (ReconciliationCollector(engine),)

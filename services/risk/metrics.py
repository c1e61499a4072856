"""risk's figures for Prometheus: transfers held for a human, read at scrape time.

    risk_reviews_pending                        reviews waiting for an admin's decision
    risk_oldest_pending_review_age_seconds      how long the oldest has waited (0 when none)
    risk_metrics_up                             1 when these could be read

Served with every service's metrics on RISK_METRICS_PORT (shared.metrics);
every risk process reads the same table: aggregate with max(). Alerts:
ops/prometheus/rules/services.yml (ReviewsAging).
"""

import logging

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from services.risk.models import Review
from services.risk.reviews import PENDING
from shared.metrics import MetricsEndpoint, age_seconds

log = logging.getLogger(__name__)

_PENDING = select(func.count(), func.min(Review.created_at)).where(Review.status == PENDING)


class ReviewCollector:
    def __init__(self, engine):
        self._engine = engine

    def collect(self):
        up = GaugeMetricFamily("risk_metrics_up", "1 when the reviews could be read")
        try:
            with self._engine().connect() as connection:
                pending, oldest = connection.execute(_PENDING).one()
        except Exception:
            log.exception("could not read the pending reviews")
            up.add_metric([], 0)
            yield up
            return
        yield GaugeMetricFamily(
            "risk_reviews_pending", "Reviews waiting for an admin's decision", value=pending
        )
        yield GaugeMetricFamily(
            "risk_oldest_pending_review_age_seconds",
            "How long the oldest pending review has waited (0 when none)",
            value=age_seconds(oldest),
        )
        up.add_metric([], 1)
        yield up


class RiskMetrics(MetricsEndpoint):
    """risk's endpoint: every service's metrics and the reviews waiting."""

    def collectors(self, engine):
        return (ReviewCollector(engine),)

"""AnalyticsService: monthly projections, insights and anomalies per user.

Listens to transactions' `transfer_completed` and `transfer_failed`; logs
every event it consumes in `analytics_events` and projects it in the same
transaction (exactly once per handler through the inbox). Publishes no
events. Serves business metrics for Prometheus (services.analytics.metrics).

RPCs (called by the gateway with the verified user id; amounts in minor
units): summary(user_id, month), insights(user_id, today=None),
anomalies(user_id, limit=50); for operators: rebuild().
"""

from nameko.extensions import DependencyProvider

from services.analytics import consumers, projections, schemas, views
from services.analytics.domain import AnomalySettings
from services.analytics.metrics import BusinessMetrics
from shared import contracts
from shared.database import Database
from shared.event_handlers import saga_step
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class Settings(DependencyProvider):
    """The anomaly thresholds, read from ANALYTICS_ANOMALY_* once at start."""

    def setup(self):
        self.settings = AnomalySettings.from_env()

    def get_dependency(self, worker_ctx):
        return self.settings


class AnalyticsService(ServiceBase):
    name = "analytics"

    db = Database()
    settings = Settings()
    metrics = BusinessMetrics()

    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_COMPLETED)
    def handle_transfer_completed(self, envelope):
        consumers.handle_transfer_completed(self.db, envelope, now=utcnow(), settings=self.settings)

    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_FAILED)
    def handle_transfer_failed(self, envelope):
        consumers.handle_transfer_failed(self.db, envelope, now=utcnow(), settings=self.settings)

    @rpc
    def summary(self, user_id, month):
        args = load(schemas.SummaryArgs, {"user_id": user_id, "month": month})
        return views.summary(self.db, str(args["user_id"]), args["month"])

    @rpc
    def insights(self, user_id, today=None):
        args = load(schemas.InsightsArgs, {"user_id": user_id, "today": today})
        return views.insights(self.db, str(args["user_id"]), args["today"] or utcnow().date())

    @rpc
    def anomalies(self, user_id, limit=50):
        args = load(schemas.AnomaliesArgs, {"user_id": user_id, "limit": limit})
        return views.anomalies(self.db, str(args["user_id"]), args["limit"])

    @rpc
    def rebuild(self):
        """Drop the projections and replay every logged event (operators)."""
        return projections.rebuild(self.db, self.settings)

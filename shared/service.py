"""What every service has: a correlation context, call traces, a health check."""

from nameko_tracer import Tracer
from sqlalchemy import text

from shared.context import CorrelationContext
from shared.rpc import rpc


class ServiceBase:
    correlation_id = CorrelationContext()
    # One log line per entrypoint call (see shared.logs.TraceSummaryFilter).
    tracer = Tracer()

    @rpc
    def health(self) -> dict:
        """Answers when the service can reach its broker (this call) and database."""
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "status": "ok"}

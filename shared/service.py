"""What every service has: a correlation context and a health check."""

from sqlalchemy import text

from shared.context import CorrelationContext
from shared.rpc import rpc


class ServiceBase:
    correlation_id = CorrelationContext()

    @rpc
    def health(self) -> dict:
        """Answers when the service can reach its broker (this call) and database."""
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "status": "ok"}

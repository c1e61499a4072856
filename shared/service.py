"""What every service has: a correlation context, call traces, housekeeping
of its outbox and inbox, a health check over RPC, its own health endpoint
and its own metrics endpoint."""

import socket

from nameko.containers import ServiceContainer as NamekoServiceContainer
from nameko_tracer import Tracer
from sqlalchemy import text

from shared import broker
from shared.consumer_watchdog import ConsumerWatchdog
from shared.context import CorrelationContext
from shared.heartbeats import Heartbeat
from shared.housekeeping import Housekeeping
from shared.metrics import MetricsEndpoint
from shared.probes import HealthEndpoint
from shared.rpc import rpc
from shared.tracing import TracedEntrypoints


class ServiceContainer(NamekoServiceContainer):
    """nameko's container, reaching the broker as shared.broker says: over TLS
    with the service's own certificate when one is configured, and knowing
    its identity there (config.yml names this class: SERVICE_CONTAINER_CLS)."""

    def __init__(self, service_cls, config):
        access = broker.access(service_cls.name, config.get("AMQP_URI"))
        super().__init__(service_cls, access.nameko_config(config))


class EntrypointTracer(Tracer):
    """nameko-tracer, asking the host's name once rather than twice per call."""

    def setup(self):
        super().setup()
        self._extra = {"hostname": socket.gethostname()}

    def adapter_factory(self, worker_ctx):
        adapter_class = self.adapter_types[type(worker_ctx.entrypoint)]
        return adapter_class(self.logger, extra=self._extra)


class ServiceBase:
    correlation_id = CorrelationContext()
    # A span per entrypoint call, child of the caller's (shared/tracing.py).
    tracing = TracedEntrypoints()
    # One log line per entrypoint call (see shared.logs.TraceSummaryFilter).
    tracer = EntrypointTracer()
    # Published outbox rows and old inbox ids deleted on a schedule.
    housekeeping = Housekeeping()
    # This process's own /health/live and /health/ready (SERVICE_HEALTH_PORT).
    health_endpoint = HealthEndpoint()
    # Reconnects the queue consumer when a reconnection hangs.
    consumer_watchdog = ConsumerWatchdog()
    # Its heartbeat, so operators see every instance (GET /v1/admin/services).
    heartbeat = Heartbeat()
    # Its metrics for Prometheus (<SERVICE>_METRICS_PORT; a service with
    # figures of its own replaces it with a subclass of the same name).
    metrics = MetricsEndpoint()

    @rpc
    def health(self) -> dict:
        """Answers when the service can reach its broker (this call) and database."""
        with self.db.commit_on_exit() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "status": "ok"}

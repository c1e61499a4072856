"""A service process's Prometheus endpoint: its entrypoints, its saga steps, its outbox.

Every nameko service serves one endpoint per process (`ServiceBase.metrics`,
a `MetricsEndpoint`), on the port named by `<SERVICE>_METRICS_PORT` (e.g.
TRANSACTIONS_METRICS_PORT), else SERVICE_METRICS_PORT (what a container of
one service sets); 0 or unset turns it off, except for analytics (9102) and
accounts (9103), whose endpoints predate the others. The address is
`<SERVICE>_METRICS_ADDR` or SERVICE_METRICS_ADDR, default 127.0.0.1:
nothing outside the machine reads a process's figures unless told (the
containers, where Prometheus scrapes the pod, set 0.0.0.0). `make run`
gives each service its own port and prints them (docs/OPERATIONS.md).

What every process exports (no `service` label: the scrape target carries
it, as Prometheus's `job` and `service` labels):

    service_entrypoint_calls_total{entrypoint, kind, outcome}   kind: rpc, event, timer...;
                                                                outcome: ok or error
    service_entrypoint_errors_total{entrypoint, kind, error}    error: the exception's class
    service_entrypoint_duration_seconds{entrypoint, kind}       histogram
    inbox_duplicates_total{handler}             deliveries dropped as already handled
    saga_step_retries_total{handler}            failed steps sent to a retry queue
    saga_step_parked_total{handler}             steps parked in the dead-letter queue
    saga_parked_messages                        messages in this service's dead-letter queue now
    outbox_pending_events                       staged events not yet published
    outbox_oldest_pending_age_seconds           age of the oldest of them (0 when none)
    db_pool_connections_in_use, db_pool_size    this process's database connections
    provider_circuit_state{provider}            0 closed, 1 half-open, 2 open (payments,
                                                notifications)
    service_metrics_scrape_errors_total{part}   a part that could not be read at a scrape
    queue_consumer_stalls_total                 reconnections the consumer watchdog forced
                                                (shared/consumer_watchdog.py)

plus what a service adds (transactions: transfers ended and the saga's
duration; risk: reviews waiting; accounts: reconciliation; analytics:
business figures) and the process's own (CPU, memory, open files).

Values read from a database at scrape time (outbox, reviews, business
figures) are the same in every process of a service: aggregate those with
max(), not sum(). Counters and histograms are each process's own: sum().
"""

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError
from nameko.extensions import DependencyProvider
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine

from shared import broker, config
from shared.database import Database
from shared.tracing import entrypoint_kind

log = logging.getLogger(__name__)

DEFAULT_ADDR = "127.0.0.1"
# Endpoints that were on by default before every service had one.
DEFAULT_PORTS = {"analytics": 9102, "accounts": 9103}

# No `_created` series beside every counter and histogram: twice the
# series for a timestamp nothing here reads.
disable_created_metrics()

# The process's metrics: one service per process, so one registry.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ENTRYPOINT_CALLS = Counter(
    "service_entrypoint_calls",
    "Entrypoint calls that finished, by outcome (ok or error)",
    ["entrypoint", "kind", "outcome"],
    registry=REGISTRY,
)
ENTRYPOINT_ERRORS = Counter(
    "service_entrypoint_errors",
    "Entrypoint calls that raised, by the exception's class",
    ["entrypoint", "kind", "error"],
    registry=REGISTRY,
)
ENTRYPOINT_DURATION = Histogram(
    "service_entrypoint_duration_seconds",
    "Time an entrypoint call took, from the worker's start to its result",
    ["entrypoint", "kind"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INBOX_DUPLICATES = Counter(
    "inbox_duplicates",
    "Deliveries dropped because the handler had handled the event already",
    ["handler"],
    registry=REGISTRY,
)
SAGA_RETRIES = Counter(
    "saga_step_retries",
    "Failed saga steps sent to a retry queue",
    ["handler"],
    registry=REGISTRY,
)
SAGA_PARKED = Counter(
    "saga_step_parked",
    "Saga step messages parked in the dead-letter queue (out of tries, or malformed)",
    ["handler"],
    registry=REGISTRY,
)
PROVIDER_CIRCUIT = Gauge(
    "provider_circuit_state",
    "Circuit breaker per payment or notification provider: 0 closed, 1 half-open, 2 open",
    ["provider"],
    registry=REGISTRY,
)
CONSUMER_STALLS = Counter(
    "queue_consumer_stalls",
    "Times the queue consumer's loop was silent too long and was made to reconnect",
    registry=REGISTRY,
)
SCRAPE_ERRORS = Counter(
    "service_metrics_scrape_errors",
    "Parts of the metrics that could not be read at a scrape",
    ["part"],
    registry=REGISTRY,
)

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}


def age_seconds(oldest: datetime | None, now: datetime | None = None) -> float:
    """How long ago `oldest` was (0 when there is none): the age gauges."""
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - oldest).total_seconds())


def setting(container_config, key: str) -> str | None:
    value = container_config.get(key)
    return str(value) if value not in (None, "") else config.env_str(key)


def port_setting(container_config, key: str, default: int) -> int:
    raw = setting(container_config, key)
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise config.ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise config.ConfigError(f"{key} must be between 0 and 65535, got {port}")
    return port


class ServiceCollector:
    """What every service reads at scrape time: its outbox, its pool, its parked messages."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        access: broker.BrokerAccess,
        outbox: Table | None,
        parking_queue: str | None,
    ):
        self._engine = engine
        self._access = access
        self._outbox_table = outbox
        self._parking_queue = parking_queue

    def collect(self):
        yield from self._outbox()
        yield from self._pool()
        yield from self._parked()

    def _outbox(self):
        table = self._outbox_table
        if table is None:
            return
        try:
            with self._engine().connect() as connection:
                pending, oldest = connection.execute(
                    select(func.count(), func.min(table.c.created_at)).where(
                        table.c.published_at.is_(None)
                    )
                ).one()
        except Exception:
            SCRAPE_ERRORS.labels("outbox").inc()
            log.warning("could not read the outbox for metrics", exc_info=True)
            return
        yield GaugeMetricFamily(
            "outbox_pending_events", "Staged events not yet published", value=pending
        )
        yield GaugeMetricFamily(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest staged event not yet published (0 when none)",
            value=age_seconds(oldest),
        )

    def _pool(self):
        pool = self._engine().pool
        checked_out = getattr(pool, "checkedout", None)
        size = getattr(pool, "size", None)
        if checked_out is None or size is None:
            return
        yield GaugeMetricFamily(
            "db_pool_connections_in_use",
            "Database connections this process has checked out",
            value=checked_out(),
        )
        yield GaugeMetricFamily(
            "db_pool_size", "Connections this process keeps in its pool", value=size()
        )

    def _parked(self):
        if self._parking_queue is None:
            return
        try:
            with self._access.connect(connect_timeout=2) as conn:
                _, count, _ = conn.default_channel.queue_declare(self._parking_queue, passive=True)
        except (OSError, AMQPError, KombuError) as exc:  # not declared yet, or no broker
            SCRAPE_ERRORS.labels("parked").inc()
            log.debug("could not count parked messages: %s", exc)
            return
        yield GaugeMetricFamily(
            "saga_parked_messages",
            "Messages in this service's dead-letter (parking) queue",
            value=count,
        )


class MetricsEndpoint(DependencyProvider):
    """Serves this process's metrics while the service runs (module docstring).

    Also times every entrypoint call of the container (worker_setup and
    worker_result). A service adds its own collectors by subclassing and
    overriding `collectors` (and keeping the attribute name `metrics`)."""

    def __init__(self):
        self.port = 0
        self.addr = DEFAULT_ADDR
        self.registry: CollectorRegistry | None = None
        self.server = None
        self._started: dict[int, float] = {}

    def collectors(self, engine: Callable[[], Engine]) -> Iterable:
        return ()

    def setup(self):
        service = self.container.service_name
        prefix = service.upper()
        container_config = self.container.config
        default = DEFAULT_PORTS.get(service, 0)
        self.port = port_setting(
            container_config,
            f"{prefix}_METRICS_PORT",
            port_setting(container_config, "SERVICE_METRICS_PORT", default),
        )
        self.addr = (
            setting(container_config, f"{prefix}_METRICS_ADDR")
            or setting(container_config, "SERVICE_METRICS_ADDR")
            or DEFAULT_ADDR
        )

    def start(self):
        if not self.port:
            log.info("metrics disabled (%s_METRICS_PORT=0)", self.container.service_name.upper())
            return
        # Imported here: both import the modules that count into this one.
        from shared.event_handlers import SagaStep
        from shared.outbox import OUTBOX, OutboxRelay
        from shared.topology import dead_letter_queue_name, queue_settings

        container = self.container
        has_outbox = any(isinstance(dep, OutboxRelay) for dep in container.dependencies)
        has_steps = any(isinstance(entry, SagaStep) for entry in container.entrypoints)
        parking = (
            dead_letter_queue_name(container.service_name, queue_settings(container.config))
            if has_steps
            else None
        )
        database = next(
            (dep for dep in self.container.dependencies if isinstance(dep, Database)), None
        )
        registry = CollectorRegistry()
        registry.register(_Process(REGISTRY))
        if database is not None:

            def engine():
                return database.engine

            registry.register(
                ServiceCollector(
                    engine,
                    broker.from_config(container.config),
                    OUTBOX if has_outbox else None,
                    parking,
                )
            )
            for collector in self.collectors(engine):
                registry.register(collector)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.registry = registry
        self.server, _thread = start_http_server(self.port, addr=self.addr, registry=registry)
        log.info("metrics served", extra={"port": self.port, "addr": self.addr})

    def stop(self):
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.registry

    def worker_setup(self, worker_ctx):
        self._started[id(worker_ctx)] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(id(worker_ctx), None)
        entrypoint = worker_ctx.entrypoint
        name, kind = entrypoint.method_name, entrypoint_kind(entrypoint)
        if exc_info is None:
            ENTRYPOINT_CALLS.labels(name, kind, "ok").inc()
        else:
            ENTRYPOINT_CALLS.labels(name, kind, "error").inc()
            ENTRYPOINT_ERRORS.labels(name, kind, exc_info[0].__name__).inc()
        if started is not None:
            ENTRYPOINT_DURATION.labels(name, kind).observe(time.perf_counter() - started)


class _Process:
    """The process-wide metrics (this module's REGISTRY) in an endpoint's registry."""

    def __init__(self, source: CollectorRegistry):
        self._source = source

    def collect(self):
        return self._source.collect()

"""A service's Prometheus endpoint: collectors that read its database at scrape time.

Values that live in the database (not in process memory) are the same in
every process of a service, survive restarts, and need no coordination;
Prometheus scrapes each process, so aggregate across them with max(), not
sum(). The HTTP server is prometheus_client's, whose threads are green under
eventlet's monkey patching; each scrape runs a few short queries.

Each service names its own settings, e.g. ANALYTICS_METRICS_PORT (0
disables) and ANALYTICS_METRICS_ADDR (default 127.0.0.1: nothing outside the
machine reads a service's figures unless told; the containers, where
Prometheus scrapes the pod, set 0.0.0.0); either may also be given in the
container config.
"""

import logging
from collections.abc import Callable

from nameko.extensions import DependencyProvider
from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from sqlalchemy.engine import Engine

from shared import config
from shared.database import Database

log = logging.getLogger(__name__)

DEFAULT_ADDR = "127.0.0.1"


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


class MetricsEndpoint(DependencyProvider):
    """Serves /metrics (any path) on the service's metrics port while it runs.

    Subclasses name the settings and build their collector from a callable
    that returns the service's engine.
    """

    port_key: str
    addr_key: str
    default_port: int

    def __init__(self):
        self.port = 0
        self.addr = DEFAULT_ADDR
        self.registry: CollectorRegistry | None = None
        self.server = None

    def collector(self, engine: Callable[[], Engine]):
        raise NotImplementedError

    def setup(self):
        self.port = port_setting(self.container.config, self.port_key, self.default_port)
        self.addr = setting(self.container.config, self.addr_key) or DEFAULT_ADDR

    def start(self):
        if not self.port:
            log.info("metrics disabled (%s=0)", self.port_key)
            return
        database = next(dep for dep in self.container.dependencies if isinstance(dep, Database))
        registry = CollectorRegistry()
        registry.register(self.collector(lambda: database.engine))
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

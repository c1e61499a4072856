"""A service process's own health, over HTTP, for its container's probes.

`python -m shared.healthcheck <service>` used to ask health() through the
service's shared RPC queue, so any instance answered for a stuck one, and
the check ran `SELECT 1`, so a database outage failed the liveness probe of
every instance at once and restarted them all. Each process now answers
for itself on SERVICE_HEALTH_PORT (0, the default, turns it off; bound to
SERVICE_HEALTH_ADDR, 127.0.0.1: the probes run inside the container):

- GET /health/live: 200 while the process serves: the server is a thread
  of the nameko container, so it stops answering when the container has
  died (an error nameko treats as fatal) or its hub is blocked. Nothing
  outside the process is asked: an outage restarts nobody.
- GET /health/ready: 200 when this instance can work: it reaches the
  broker and its own database, each within 2 s, and its queue consumer is
  consuming (shared.consumer_watchdog); 503 naming what failed.
"""

import json
import logging

import eventlet
import eventlet.wsgi
from nameko.extensions import DependencyProvider
from sqlalchemy import text

from shared import broker, config
from shared.consumer_watchdog import ConsumerWatchdog
from shared.database import Database

log = logging.getLogger(__name__)

TIMEOUT = 2.0


class HealthEndpoint(DependencyProvider):
    """/health/live and /health/ready of this process (see the module's docstring)."""

    def setup(self):
        self.port = config.env_int("SERVICE_HEALTH_PORT", 0, 0)
        self.addr = config.env_str("SERVICE_HEALTH_ADDR", "127.0.0.1")
        self._socket = None

    def start(self):
        if not self.port:
            return
        self._socket = eventlet.listen((self.addr, self.port))
        self.container.spawn_managed_thread(self._serve, identifier="health_endpoint")
        log.info("health endpoint listening", extra={"port": self.port})

    def stop(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def kill(self):
        self.stop()

    def _serve(self) -> None:
        eventlet.wsgi.server(self._socket, self._app, log_output=False, socket_timeout=5)

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/health/live":
            status, body = "200 OK", {"status": "live"}
        elif path == "/health/ready":
            checks = {
                "broker": self._check_broker(),
                "database": self._check_database(),
                "consumer": check_consumer(self.container),
            }
            ready = all(state == "ok" for state in checks.values())
            status = "200 OK" if ready else "503 Service Unavailable"
            body = {"status": "ready" if ready else "not_ready", "checks": checks}
        else:
            status, body = "404 Not Found", {"status": "not_found"}
        payload = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    def _check_broker(self) -> str:
        return check_broker(self.container)

    def _check_database(self) -> str:
        return check_database(self.container)


def check_broker(container) -> str:
    """ "ok", or why this process cannot open a connection to its broker."""
    return reach_broker(broker.from_config(container.config))


def reach_broker(access: "broker.BrokerAccess", timeout: float = TIMEOUT) -> str:
    """ "ok", or why a new connection to the broker could not be opened
    within `timeout` (the handshake included: a broker that accepts and then
    says nothing fails too). Green under eventlet, plain in a thread."""
    options = {"read_timeout": timeout, "write_timeout": timeout}
    try:
        with access.connection(connect_timeout=timeout, transport_options=options) as connection:
            connection.connect()
    except Exception as exc:  # noqa: BLE001 (named in the answer)
        return type(exc).__name__
    return "ok"


def check_consumer(container) -> str:
    """ "ok" while the process's queue consumer consumes, else "connecting"."""
    watchdog = next((d for d in container.dependencies if isinstance(d, ConsumerWatchdog)), None)
    return "ok" if watchdog is None or watchdog.consuming() else "connecting"


def check_database(container) -> str:
    """ "ok", or why this process cannot run SELECT 1 on its own database."""
    database = next((dep for dep in container.dependencies if isinstance(dep, Database)), None)
    if database is None or database.engine is None:
        return "ok"  # a service without a database needs none
    try:
        with eventlet.Timeout(TIMEOUT), database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (Exception, eventlet.Timeout) as exc:  # noqa: BLE001 (named in the answer)
        return type(exc).__name__
    return "ok"

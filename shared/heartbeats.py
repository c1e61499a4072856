"""Each service process says, every few seconds, that it runs and whether it
can work, so operators see every instance, not just "some instance answered".

A heartbeat is a small JSON message on the topic exchange
`platform.heartbeats`, routed by the service's name:

    {"service": "accounts", "instance": "<host>:<pid>", "ready": true,
     "checks": {"database": "ok"}, "at": "<ISO time>", "interval": 5}

It reaching the broker is the broker check; the database is checked as the
instance's /health/ready does (shared.probes). Messages are transient and
nobody keeps them: the gateway's listener (gateway/instances.py) binds a
queue of its own and remembers the latest per instance, for
GET /v1/admin/services. SERVICE_HEARTBEAT_SECONDS (5; 0 turns it off).
"""

import json
import logging
import os
import socket
import threading
from datetime import UTC, datetime

from kombu import Exchange, Producer
from nameko.extensions import DependencyProvider

from shared import broker, config
from shared.probes import check_database

log = logging.getLogger(__name__)

EXCHANGE = "platform.heartbeats"


def exchange() -> Exchange:
    return Exchange(EXCHANGE, type="topic", durable=True)


class Heartbeat(DependencyProvider):
    def setup(self):
        self.interval = config.env_int("SERVICE_HEARTBEAT_SECONDS", 5, 0)
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._stopped = threading.Event()  # green under nameko's monkey patching

    def start(self):
        if self.interval:
            self.container.spawn_managed_thread(self._run, identifier="heartbeat")

    def stop(self):
        self._stopped.set()

    def kill(self):
        self._stopped.set()

    def beat(self) -> dict:
        checks = {"database": check_database(self.container)}
        return {
            "service": self.container.service_name,
            "instance": self.instance,
            "ready": all(state == "ok" for state in checks.values()),
            "checks": checks,
            "at": datetime.now(UTC).isoformat(),
            "interval": self.interval,
        }

    def _run(self) -> None:
        connection = None
        while not self._stopped.is_set():
            try:
                if connection is None:
                    access = broker.from_config(self.container.config)
                    connection = access.connect(connect_timeout=5)
                    identity = access.identity
                    producer = Producer(connection.channel(), exchange=exchange())
                    producer.declare()
                producer.publish(
                    json.dumps(self.beat()),
                    routing_key=self.container.service_name,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=1,  # transient: a heartbeat is worth nothing later
                    user_id=identity,
                    retry=False,
                )
            except Exception:  # the broker away: the next beat tries again
                log.debug("heartbeat not sent", exc_info=True)
                broker.discard(connection)
                connection = None
            self._stopped.wait(self.interval)
        if connection is not None:
            connection.release()

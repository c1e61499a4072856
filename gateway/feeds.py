"""Services' events, fed to each gateway process by a listener thread.

Each process binds its own exclusive queue (gone when the process is) to
the exchanges and routing keys it follows, and hands every message to a
callback. It reconnects forever; `connected` says whether it is listening
now, and `on_connect` runs after each (re)bind, so a caller can catch up
on what it may have missed while away.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

from kombu import Consumer, Exchange, Queue, binding

from shared import broker

log = logging.getLogger(__name__)


class EventFeed:
    def __init__(
        self,
        access: broker.BrokerAccess,
        name: str,
        bindings: list[tuple[str, str]],
        on_message: Callable[[dict], None],
        on_connect: Callable[[], None] | None = None,
    ):
        self._access = access
        self._name = name
        self._on_message = on_message
        self._on_connect = on_connect
        self._started = False
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self._queue = Queue(
            f"gateway.{name}.{uuid.uuid4()}",
            bindings=[
                binding(Exchange(exchange, type="topic", durable=True), routing_key=key)
                for exchange, key in bindings
            ],
            exclusive=True,
            auto_delete=True,
            durable=False,
        )

    def ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
                self._started = True

    def _deliver(self, body, message) -> None:
        try:
            if isinstance(body, dict):
                self._on_message(body)
        except Exception:  # one bad message must not stop the feed
            log.exception("event feed could not handle a message", extra={"feed": self._name})

    def _run(self) -> None:
        backoff = 1.0
        while True:
            conn = None
            try:
                # Every wait bounded (shared.broker): a feed connected while the
                # broker's answers did not reach us would be deaf for good,
                # and the revocation feed must not be.
                conn = self._access.connect(heartbeat=30, connect_timeout=5)
                with Consumer(
                    conn, [self._queue], callbacks=[self._deliver], accept=["json"], no_ack=True
                ):
                    # Bound first, then caught up: nothing falls between the two.
                    if self._on_connect is not None:
                        self._on_connect()
                    self.connected.set()
                    backoff = 1.0
                    while True:
                        try:
                            conn.drain_events(timeout=1)
                        except TimeoutError:
                            conn.heartbeat_check()
            except Exception as exc:  # noqa: BLE001 (reconnect forever: the feed must flow)
                self.connected.clear()
                broker.discard(conn)  # no goodbye on a connection that failed
                log.warning(
                    "event feed disconnected; retrying",
                    extra={"feed": self._name, "error": repr(exc), "retry_in": backoff},
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

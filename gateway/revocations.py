"""Sessions ended before their access tokens expire (logout, token reuse).

Each gateway process keeps the set in memory. auth publishes
`session_revoked` through its outbox; a listener thread per process binds
its own queue to auth's event exchange and adds each session as it comes.
On every (re)connect it first binds, then pulls the current list from auth
over RPC, so nothing revoked while it was away is missed. Entries expire
with the longest-lived access token they could affect.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

from kombu import Connection, Consumer, Exchange, Queue

from shared import contracts
from shared.events import exchange_name

log = logging.getLogger(__name__)


class RevocationList:
    def __init__(self, keep_for: float):
        self._keep_for = keep_for
        self._revoked: dict[str, float] = {}
        self._changed = threading.Condition()

    def add(self, session_id: str) -> None:
        with self._changed:
            now = time.monotonic()
            self._revoked[session_id] = now + self._keep_for
            if len(self._revoked) > 1000:
                self._revoked = {s: t for s, t in self._revoked.items() if t > now}
            self._changed.notify_all()

    def __contains__(self, session_id: str) -> bool:
        expires = self._revoked.get(session_id)
        return expires is not None and expires > time.monotonic()

    def wait_for(self, session_id: str, timeout: float) -> bool:
        """Block until the listener has heard of `session_id` (or time out)."""
        with self._changed:
            return self._changed.wait_for(lambda: session_id in self, timeout)


class RevocationListener:
    """Feeds a RevocationList from auth's events; one daemon thread per process."""

    def __init__(
        self, amqp_uri: str, revoked: RevocationList, pull_current: Callable[[], list[dict]]
    ):
        self._amqp_uri = amqp_uri
        self._revoked = revoked
        self._pull_current = pull_current
        self._started = False
        self._lock = threading.Lock()
        self.connected = threading.Event()
        exchange = Exchange(exchange_name(contracts.AUTH), type="topic", durable=True)
        self._queue = Queue(
            f"gateway.revocations.{uuid.uuid4()}",
            exchange,
            routing_key=contracts.SESSION_REVOKED,
            exclusive=True,
            auto_delete=True,
            durable=False,
        )

    def ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                threading.Thread(target=self._run, name="revocations", daemon=True).start()
                self._started = True

    def _on_message(self, body, message) -> None:
        session_id = (body.get("payload") or {}).get("session_id")
        if session_id:
            self._revoked.add(session_id)
        message.ack()

    def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                with (
                    Connection(self._amqp_uri, heartbeat=30, connect_timeout=5) as conn,
                    Consumer(conn, [self._queue], callbacks=[self._on_message], accept=["json"]),
                ):
                    # Bound first, then caught up: nothing falls between the two.
                    for item in self._pull_current():
                        self._revoked.add(item["session_id"])
                    self.connected.set()
                    backoff = 1.0
                    while True:
                        try:
                            conn.drain_events(timeout=1)
                        except TimeoutError:
                            conn.heartbeat_check()
            except Exception as exc:  # noqa: BLE001 (reconnect forever: revocations must flow)
                self.connected.clear()
                log.warning(
                    "revocation listener disconnected; retrying",
                    extra={"error": repr(exc), "retry_in": backoff},
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

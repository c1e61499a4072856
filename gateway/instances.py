"""Every running instance of every service, from their heartbeats (shared.heartbeats).

One listener per gateway process (an EventFeed on `platform.heartbeats`)
remembers each instance's latest heartbeat; an instance not heard from for
three of its intervals is gone (stopped, killed, cut off from the broker).
"""

import threading
import time

from gateway.feeds import EventFeed
from shared.broker import BrokerAccess
from shared.heartbeats import EXCHANGE

MISSED = 3  # intervals without a heartbeat before an instance counts as gone
WARM_UP = 5.5  # a listener that has heard for this long has heard every instance


class InstanceRegistry:
    def __init__(self, access: BrokerAccess):
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], tuple[float, dict]] = {}
        self._listening_since: float | None = None
        self._feed = EventFeed(
            access,
            "heartbeats",
            [(EXCHANGE, "#")],
            self._on_message,
            on_connect=self._on_connect,
        )
        self.connected = self._feed.connected

    def ensure_started(self) -> None:
        self._feed.ensure_started()

    def _on_connect(self) -> None:
        self._listening_since = time.monotonic()

    def warm(self, wait: float = 3.0) -> None:
        """Listen, and have listened for one heartbeat interval (the default,
        5 s) at most once per process, so a new process lists every instance."""
        self.ensure_started()
        if not self.connected.wait(wait) or self._listening_since is None:
            return
        time.sleep(max(0.0, self._listening_since + WARM_UP - time.monotonic()))

    def _on_message(self, beat: dict) -> None:
        service, instance = beat.get("service"), beat.get("instance")
        if isinstance(service, str) and isinstance(instance, str):
            with self._lock:
                self._latest[(service, instance)] = (time.monotonic(), beat)

    def instances(self, service: str) -> list[dict]:
        """The service's live instances: name, ready, checks, seconds since heard of."""
        now = time.monotonic()
        found = []
        with self._lock:
            for (name, instance), (heard, beat) in list(self._latest.items()):
                if name != service:
                    continue
                if now - heard > MISSED * max(float(beat.get("interval") or 5), 1.0):
                    del self._latest[(name, instance)]
                    continue
                found.append(
                    {
                        "instance": instance,
                        "ready": bool(beat.get("ready")),
                        "checks": beat.get("checks") or {},
                        "seconds_since_heartbeat": round(now - heard, 1),
                    }
                )
        return sorted(found, key=lambda item: item["instance"])

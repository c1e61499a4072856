"""Sessions ended before their access tokens expire (logout, token reuse).

Each gateway process keeps the set in memory. auth publishes
`session_revoked` through its outbox; a listener thread per process binds
its own queue to auth's event exchange and adds each session as it comes.
On every (re)connect it first binds, then pulls the current list from auth
over RPC, so nothing revoked while it was away is missed. Entries expire
with the longest-lived access token they could affect.
"""

import threading
import time
from collections.abc import Callable

from gateway.feeds import EventFeed
from shared import contracts
from shared.broker import BrokerAccess
from shared.events import exchange_name


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
        self,
        access: BrokerAccess,
        revoked: RevocationList,
        pull_current: Callable[[], list[dict]],
    ):
        self._revoked = revoked
        self._pull_current = pull_current
        self._feed = EventFeed(
            access,
            "revocations",
            [(exchange_name(contracts.AUTH), contracts.SESSION_REVOKED)],
            self._on_message,
            on_connect=self._catch_up,
        )
        self.connected = self._feed.connected

    def ensure_started(self) -> None:
        self._feed.ensure_started()

    def _on_message(self, body: dict) -> None:
        session_id = (body.get("payload") or {}).get("session_id")
        if session_id:
            self._revoked.add(session_id)

    def _catch_up(self) -> None:
        for item in self._pull_current():
            self._revoked.add(item["session_id"])

"""Requests that wait for a transfer to end (`Prefer: wait=N`), woken by its outcome.

Each gateway process has its own routing key on transactions' exchange
(`route`, shared.contracts.OUTCOME_ROUTE_PREFIX + a uuid), bound to its
feed's queue (gateway.feeds). A request that starts a transfer and
prefers to wait gives transactions that key, and the transfer's
`transfer_completed` or `transfer_failed` is routed there as well as to
its consumers: one delivery to the process that waits, however many
gateway processes there are (before, every process decoded every
outcome). The process keeps what came for a minute. The outcome event
carries the whole transfer view, so the answer needs no second call to
transactions.

A request registers the transfer before it looks at it, so an outcome
that arrives meanwhile is not missed, and sleeps until the outcome comes
or its time is up. Another process may hold the key a transfer was
started with (a GET, or the same Idempotency-Key sent again, landing
elsewhere), so a waiting request also reads the transfer now and then
(`poll_after`, doubling): it answers within a poll of the end even when
its own feed will never hear of it. At most `max_waiters` requests of a
process wait at once (each holds one of its threads); beyond that, and
while the feed is not connected, requests answer at once and the client
polls as before.
"""

import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gateway.feeds import EventFeed
from shared import contracts
from shared.broker import BrokerAccess
from shared.errors import Unavailable
from shared.events import exchange_name

# How long an outcome is kept for requests that start waiting after it came.
REMEMBER_SECONDS = 60.0
REMEMBER_AT_MOST = 20_000
# The longest wait a client may ask for (RFC 7240 lets the server choose).
MAX_WAIT_SECONDS = 10


# A waiting request that reads the transfer itself (wait_or_read) waits
# twice as long before each next read, up to this.
POLL_AT_MOST_EVERY = 2.0


class Watch:
    def __init__(self, outcomes: "TransferOutcomes", transfer_id: str, event: threading.Event):
        self._outcomes, self._transfer_id, self._event = outcomes, transfer_id, event

    def wait(self, timeout: float) -> dict | None:
        """The transfer's outcome payload, once it ended (None if time ran out)."""
        outcome = self._outcomes.ended(self._transfer_id)  # it may have come before
        if outcome is None and self._event.wait(timeout):
            outcome = self._outcomes.ended(self._transfer_id)
        return outcome

    def wait_or_read(
        self, timeout: float, read: Callable[[], dict | None], poll_after: float
    ) -> dict | None:
        """The transfer's end, from its outcome here or from `read()` (the
        transfer's view once it is no longer pending, else None), whichever
        comes first; None if `timeout` seconds pass first. A read that finds
        transactions or the broker away counts as "still pending": the
        transfer was accepted, and the outcome may yet come here."""
        deadline = time.monotonic() + timeout
        pause = poll_after
        while (left := deadline - time.monotonic()) > 0:
            outcome = self.wait(min(pause, left))
            if outcome is not None:
                return transfer_view(outcome)
            if deadline - time.monotonic() <= 0:
                return None
            try:
                ended = read()
            except Unavailable:
                ended = None
            if ended is not None:
                return ended
            pause = min(pause * 2, POLL_AT_MOST_EVERY)
        return None


class TransferOutcomes:
    # What transactions routes to a process's outcome route (handlers.py's _fold).
    EVENTS = (contracts.TRANSFER_COMPLETED, contracts.TRANSFER_FAILED)

    def __init__(self, access: BrokerAccess, max_waiters: int):
        self._max_waiters = max_waiters
        self._lock = threading.Lock()
        self._waiting: dict[str, list[threading.Event]] = {}
        self._waiters = 0
        self._ended: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._route = f"{contracts.OUTCOME_ROUTE_PREFIX}{uuid.uuid4()}"
        self._feed = EventFeed(
            access,
            "outcomes",
            [(exchange_name(contracts.TRANSACTIONS), self._route)],
            self._on_message,
        )

    def ensure_started(self) -> None:
        self._feed.ensure_started()

    def route(self) -> str | None:
        """The routing key to start a transfer with, for its outcome to come
        here; None while the feed is not listening (nothing would)."""
        self.ensure_started()
        return self._route if self._feed.connected.is_set() else None

    def _on_message(self, body: dict) -> None:
        payload = body.get("payload")
        transfer_id = payload.get("transfer_id") if isinstance(payload, dict) else None
        if not isinstance(transfer_id, str):
            return
        now = time.monotonic()
        with self._lock:
            self._ended[transfer_id] = (now + REMEMBER_SECONDS, payload)
            self._ended.move_to_end(transfer_id)
            while self._ended and (
                len(self._ended) > REMEMBER_AT_MOST or next(iter(self._ended.values()))[0] < now
            ):
                self._ended.popitem(last=False)
            for event in self._waiting.get(transfer_id, ()):
                event.set()

    def ended(self, transfer_id: str) -> dict | None:
        with self._lock:
            kept = self._ended.get(transfer_id)
        return kept[1] if kept is not None and kept[0] >= time.monotonic() else None

    @contextmanager
    def watch(self, transfer_id: str) -> Iterator[Watch | None]:
        """Listen for the transfer's outcome while the block runs; None when
        this process cannot wait now (too many waiting, feed not connected)."""
        self.ensure_started()
        event = threading.Event()
        with self._lock:
            if self._waiters >= self._max_waiters or not self._feed.connected.is_set():
                event = None
            else:
                self._waiters += 1
                self._waiting.setdefault(transfer_id, []).append(event)
        if event is None:
            yield None
            return
        try:
            yield Watch(self, transfer_id, event)
        finally:
            with self._lock:
                self._waiters -= 1
                events = self._waiting[transfer_id]
                events.remove(event)
                if not events:
                    del self._waiting[transfer_id]


# RFC 7240's delta-seconds, in ASCII digits. str.isdigit() also takes "²" (which
# int() refuses) and any length (int() refuses past 4,300 digits): both were a
# 500 after the transfer was made. A wait of ten digits or more is ignored.
_WAIT_SECONDS = re.compile(r"[0-9]{1,9}")


def preferred_wait(prefer_header: str | None) -> int:
    """Seconds the client prefers to wait (RFC 7240 `Prefer: wait=N`), capped; 0 if
    none, or if N is no number of seconds (a preference, not a demand)."""
    for preference in (prefer_header or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if _WAIT_SECONDS.fullmatch(value.strip()):
            return min(int(value.strip()), MAX_WAIT_SECONDS)
    return 0


def transfer_view(outcome: dict) -> dict:
    """GET /v1/transfers/{id}'s view (minor units), from a transfer's outcome event."""
    details = outcome["transfer"]
    return {
        "transfer_id": outcome["transfer_id"],
        "kind": outcome["kind"],
        "status": outcome["status"],
        "failure_reason": outcome.get("reason"),
        "amount": outcome["amount"],
        "currency": outcome["currency"],
        "from_account_id": details.get("from_account_id"),
        "to_account_id": details.get("to_account_id"),
        "reference": details.get("reference"),
        "created_at": outcome.get("created_at"),
        "updated_at": outcome.get("updated_at"),
        "steps": outcome.get("steps") or [],
    }

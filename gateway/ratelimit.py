"""Rate-limit counters in process memory that are safe under gunicorn's threads.

limits' own `memory://` storage is not: two threads can start the same
expiry timer ("threads can only be started once", a 500 to the client),
and it starts a timer thread per request. This storage keeps the fixed
windows Flask-Limiter counts (its default strategy) behind one lock and
forgets expired windows as it goes. It is the embedded default
(`locked-memory://`; `memory://` means it too). Counts are per process: a
deployment with several gateway processes sets RATE_LIMIT_STORAGE_URI to
Redis so that they share them.
"""

import threading
import time

from limits.storage import Storage

# How often expired windows are dropped (each is also reset when next used).
SWEEP_SECONDS = 5.0


class LockedMemoryStorage(Storage):
    STORAGE_SCHEME = ["locked-memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def _current(self, key: str, now: float) -> int:
        """The key's count in its window; caller holds the lock."""
        if now >= self._next_sweep:
            for stale in [k for k, expires in self._expires.items() if expires <= now]:
                self._counts.pop(stale, None)
                self._expires.pop(stale, None)
            self._next_sweep = now + SWEEP_SECONDS
        if self._expires.get(key, now) <= now:
            self._counts.pop(key, None)
            self._expires.pop(key, None)
        return self._counts.get(key, 0)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        with self._lock:
            count = self._current(key, now) + amount
            self._counts[key] = count
            if count == amount:
                self._expires[key] = now + expiry
            return count

    def get(self, key: str) -> int:
        with self._lock:
            return self._current(key, time.time())

    def get_expiry(self, key: str) -> float:
        now = time.time()
        with self._lock:
            self._current(key, now)
            return self._expires.get(key, now)

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            cleared = len(self._counts)
            self._counts.clear()
            self._expires.clear()
            return cleared

    def clear(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)
            self._expires.pop(key, None)


def storage_uri(configured: str) -> str:
    """The storage to count in: `memory://` (limits' own, unsafe under
    threads) is replaced by this module's; anything else is kept."""
    scheme = LockedMemoryStorage.STORAGE_SCHEME[0]
    return f"{scheme}://" if configured.startswith("memory://") else configured


def per_process(uri: str) -> bool:
    return uri.startswith(f"{LockedMemoryStorage.STORAGE_SCHEME[0]}://")

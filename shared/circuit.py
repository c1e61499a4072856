"""A circuit breaker around calls to an outside provider (payments, notifications).

pybreaker's `call()` holds the breaker's lock for the whole guarded call,
which under eventlet serialises every worker behind one slow request; this
uses `calling()`, which holds it only to check and record state. While the
circuit is not closed, one call at a time may try the provider (the
trial); the others fail fast instead of piling on. A ProviderRejected
answer means the provider is up, so it does not count as a failure.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pybreaker

from shared.provider_errors import ProviderRejected, ProviderUnavailable


class ProviderCircuit:
    def __init__(self, name: str, failures: int, reset_timeout: float):
        self.name = name
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures, reset_timeout=reset_timeout, exclude=[ProviderRejected], name=name
        )
        self._trial = threading.Lock()

    @property
    def state(self) -> str:
        return self._breaker.current_state

    @contextmanager
    def guarded(self) -> Iterator[None]:
        trial = self._breaker.current_state != pybreaker.STATE_CLOSED
        if trial and not self._trial.acquire(blocking=False):
            raise ProviderUnavailable("circuit_open", f"{self.name}: a trial call is under way")
        try:
            with self._breaker.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            raise ProviderUnavailable("circuit_open", f"{self.name}: {exc}") from exc
        finally:
            if trial:
                self._trial.release()

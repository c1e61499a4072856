"""Circuit breakers: calls to a target that keeps failing fail fast for a while.

Around an outside provider (payments, notifications: ProviderCircuit) and
around each service the gateway calls (gateway/rpc.py). pybreaker's
`call()` holds the breaker's lock for the whole guarded call, which under
eventlet serialises every worker behind one slow request, and in the
gateway's threads every request to one service behind another; this uses
`calling()`, which holds it only to check and record state. While the
circuit is not closed, one call at a time may try the target (the trial);
the others fail fast instead of piling on. An error that shows the target
is up (a provider's refusal, a service's business error) does not count.
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import pybreaker

from shared.provider_errors import ProviderRejected, ProviderUnavailable


class Circuit:
    """`refuse(message)` builds the error raised instead of calling;
    `exclude` (types or predicates) names the errors that do not count;
    `listeners` are pybreaker listeners (state changes, for metrics)."""

    def __init__(
        self,
        name: str,
        failures: int,
        reset_timeout: float,
        *,
        refuse: Callable[[str], Exception],
        exclude: Iterable = (),
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ):
        self.name = name
        self._refuse = refuse
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures,
            reset_timeout=reset_timeout,
            exclude=list(exclude),
            listeners=list(listeners),
            name=name,
        )
        self._trial = threading.Lock()

    @property
    def state(self) -> str:
        return self._breaker.current_state

    @contextmanager
    def guarded(self) -> Iterator[None]:
        trial = self._breaker.current_state != pybreaker.STATE_CLOSED
        if trial and not self._trial.acquire(blocking=False):
            raise self._refuse(f"{self.name}: a trial call is under way")
        try:
            with self._breaker.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            raise self._refuse(f"{self.name}: {exc}") from exc
        finally:
            if trial:
                self._trial.release()


class ProviderCircuit(Circuit):
    """An outside provider's circuit: a ProviderRejected answer means it is up."""

    def __init__(
        self,
        name: str,
        failures: int,
        reset_timeout: float,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ):
        super().__init__(
            name,
            failures,
            reset_timeout,
            refuse=lambda message: ProviderUnavailable("circuit_open", message),
            exclude=[ProviderRejected],
            listeners=listeners,
        )

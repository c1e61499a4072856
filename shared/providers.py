"""Calling an outside provider over HTTP: what the payments adapter and the
notifications SMS and push adapters share.

- JsonApi: one provider's JSON API, over a pool of keep-alive connections;
  no answer at all (refused, reset, timed out) is Transient.
- Guard: tenacity retries of Transient errors (exponential backoff with full
  jitter, within `max_attempts` and `retry_deadline` seconds), each try
  through a circuit breaker (shared.circuit).
- answer_body and refusal: what an HTTP answer means, in the terms of
  shared.provider_errors.
- env_seconds and api_key_from_env: the adapters' settings from the environment.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

import pybreaker
import requests
import tenacity
from opentelemetry.trace import SpanKind
from requests.adapters import HTTPAdapter

from shared import config, correlation, metrics, tracing
from shared.circuit import ProviderCircuit
from shared.provider_errors import ProviderError, ProviderRejected, ProviderUnavailable, Transient

log = logging.getLogger(__name__)

T = TypeVar("T")


class JsonApi:
    """A provider's JSON API at `base_url`, called with a Bearer key."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        timeout: tuple[float, float],
        pool_size: int = 10,
    ):
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._session = requests.Session()
        # Retries are tenacity's job (Guard), not urllib3's.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def headers(self, idempotency_key: str | None = None) -> dict:
        """The headers of one call, made once so that every try sends the same."""
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            correlation.HEADER: correlation.current() or correlation.new_id(),
        }
        if idempotency_key is not None:
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def request(self, method: str, path: str, headers: dict, **kwargs) -> requests.Response:
        """One HTTP exchange; no answer at all is transient."""
        try:
            return self._session.request(
                method, self._base_url + path, headers=headers, timeout=self._timeout, **kwargs
            )
        except requests.Timeout as exc:
            raise Transient("provider_timeout", f"{self.name} {path}: {exc}") from exc
        except requests.RequestException as exc:  # refused, reset, DNS, TLS
            raise Transient("provider_unreachable", f"{self.name} {path}: {exc}") from exc


class _StateGauge(pybreaker.CircuitBreakerListener):
    """provider_circuit_state follows the breaker (shared.metrics)."""

    def state_change(self, cb, old_state, new_state):
        metrics.PROVIDER_CIRCUIT.labels(cb.name).set(metrics.CIRCUIT_STATES.get(new_state.name, 2))


class Guard:
    """Retries with backoff and a circuit breaker around one provider's tries.

    After `breaker_failures` consecutive failed tries the circuit opens: calls
    fail at once with ProviderUnavailable("circuit_open") for
    `breaker_reset_timeout` seconds, then one trial call decides.
    """

    def __init__(
        self,
        circuit_name: str,
        *,
        max_attempts: int = 3,
        backoff: float = 0.25,
        backoff_max: float = 4.0,
        retry_deadline: float = 30.0,
        breaker_failures: int = 5,
        breaker_reset_timeout: float = 30.0,
    ):
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._retry_deadline = retry_deadline
        self._circuit = ProviderCircuit(
            circuit_name, breaker_failures, breaker_reset_timeout, [_StateGauge()]
        )
        metrics.PROVIDER_CIRCUIT.labels(circuit_name).set(0)

    @property
    def state(self) -> str:
        return self._circuit.state

    def call(self, attempt: Callable[[], T], **context) -> T:
        """attempt() until it returns or raises anything but Transient, or the
        tries or the deadline run out (then its last error). `context` names
        the call in the log line of each retry."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=(
                tenacity.stop_after_attempt(self._max_attempts)
                | tenacity.stop_after_delay(self._retry_deadline)
            ),
            wait=tenacity.wait_random_exponential(multiplier=self._backoff, max=self._backoff_max),
            before_sleep=lambda state: _log_retry(state, context),
            reraise=True,
        )
        if not tracing.enabled():
            return retrying(self._guarded, attempt)
        attributes = {"provider": self._circuit.name}
        attributes.update({k: str(v) for k, v in context.items() if v is not None})
        with tracing.tracer().start_as_current_span(
            f"provider {self._circuit.name}", kind=SpanKind.CLIENT, attributes=attributes
        ):
            return retrying(self._guarded, attempt)

    def _guarded(self, attempt: Callable[[], T]) -> T:
        with self._circuit.guarded():
            return attempt()


def _log_retry(state: tenacity.RetryCallState, context: dict) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "provider call failed; retrying",
        extra={
            **context,
            "attempt": state.attempt_number,
            "error": getattr(error, "code", type(error).__name__),
            "retry_in_s": round(state.upcoming_sleep, 3),
        },
    )


def answer_body(response: requests.Response, what: str) -> dict | None:
    """The JSON object the provider answered (None if the body is not one).

    An answer that is no answer raises: 5xx, 408 and 429 are Transient; 401
    and 403 ProviderUnavailable, as they are about our credentials: nothing
    happened, and nothing will until an operator fixes them, so the caller
    keeps the work for then instead of failing it for good.
    """
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise Transient("provider_error", f"{what}: HTTP {status}")
    if status in (401, 403):
        raise ProviderUnavailable("provider_auth_failed", f"{what}: HTTP {status}")
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def refusal(status: int, body: dict, what: str) -> ProviderError:
    """The error for a 4xx answer the caller does not take as an outcome."""
    error = body.get("error") or {}
    code = error.get("code") or f"http_{status}"
    if status == 409 and code == "idempotency_key_in_use":
        # Providers that answer this while the first request with the key is
        # still running (Stripe does) will have its answer shortly.
        return Transient(code, f"{what}: HTTP {status}")
    message = error.get("message") or ""
    return ProviderRejected(code, f"{what}: HTTP {status} {message}".strip()[:200])


# -- settings --------------------------------------------------------------------


def env_seconds(name: str, default: float) -> float:
    raw = config.env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise config.ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise config.ConfigError(f"{name} must be more than 0, got {raw!r}")
    return value


def api_key_from_env(name: str, development_default: str) -> str:
    """The key in variable `name`; outside production, the sandbox's if unset."""
    value = config.env_str(name)
    if value is None:
        if config.is_production():
            raise config.ConfigError(f"{name} is required in production")
        value = development_default
    return value

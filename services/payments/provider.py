"""The payment provider as payments sees it: an adapter interface, and HTTP.

A provider call ends in one of three ways, and the saga treats them apart:

- a ProviderResult that succeeded: the money moved;
- a ProviderResult that failed: the provider answered and refused (a
  declined card, a closed beneficiary account, an IBAN it rejects); the
  customer's transfer fails with that reason;
- ProviderUnavailable: no definitive answer (unreachable, timed out, 5xx,
  circuit open). The outcome is unknown, maybe the money moved: the caller
  must send the same request again later with the same idempotency key,
  never report the transfer as declined.

ProviderRejected is a request the provider refuses as malformed or
conflicting (same key, different body): a bug on our side, not a decline.
"""

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import requests
import tenacity
from requests.adapters import HTTPAdapter

from shared import correlation
from shared.circuit import ProviderCircuit
from shared.provider_errors import ProviderRejected, ProviderUnavailable
from shared.provider_errors import Transient as _Transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderResult:
    succeeded: bool
    reference: str | None  # the provider's id of the charge or payout
    reason: str | None = None  # the provider's failure code when it refused

    @property
    def status(self) -> str:
        return "succeeded" if self.succeeded else "failed"


class PaymentProvider(Protocol):
    """What payments needs from a payment provider.

    Every call carries an idempotency key: calling again with the same key
    and the same arguments returns the first outcome and moves money once.
    """

    name: str

    def charge_card(
        self, idempotency_key: str, amount_minor: int, currency: str, token: str
    ) -> ProviderResult: ...

    def send_payout(
        self,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        beneficiary_name: str,
        iban: str,
    ) -> ProviderResult: ...

    def list_operations(
        self, kind: str, created_gte: datetime, created_lt: datetime
    ) -> Iterator[dict]: ...

    def retrieve(self, kind: str, reference: str) -> dict | None: ...


# Refusals that are the customer's outcome, not an error: 402 a declined
# card or a refused payout, 422 details the provider will never accept.
# Answers that say no money moved and none will for this request: a decline
# (402), details the provider refuses (422) or a request it cannot read
# (400). They fail the operation (and the saga compensates) instead of being
# retried forever. A 409 is not among them: with a reused idempotency key the
# first request may have moved money, so that one waits for an operator.
_REFUSED = (400, 402, 422)


class HttpProvider:
    """A provider behind a JSON HTTP API (the sandbox's, Stripe-like).

    Each attempt has connect and read timeouts; connection errors, timeouts,
    429, 5xx and 409 idempotency_key_in_use are retried with exponential
    backoff and full jitter, within `max_attempts` and `retry_deadline`
    seconds; nothing else is (402/422 are answers: declines). A circuit
    breaker counts consecutive failed attempts: after `breaker_failures` it
    opens and calls fail at once with ProviderUnavailable("circuit_open")
    for `breaker_reset_timeout` seconds, then one trial call decides.

    Under eventlet (nameko workers) requests' sockets and tenacity's sleep
    are green. pybreaker holds its lock for the whole of `breaker.call()`,
    which would let one provider call run at a time per process, so the
    breaker is entered through `calling()`, which holds it only to check and
    record the state.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float | tuple[float, float] = (3.05, 10.0),
        *,
        name: str = "sandbox",
        max_attempts: int = 3,
        backoff: float = 0.25,
        backoff_max: float = 4.0,
        retry_deadline: float = 30.0,
        breaker_failures: int = 5,
        breaker_reset_timeout: float = 30.0,
        pool_size: int = 10,
    ):
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._retry_deadline = retry_deadline
        self._session = requests.Session()
        # Retries are tenacity's job, not urllib3's.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._circuit = ProviderCircuit(
            f"payment-provider-{name}", breaker_failures, breaker_reset_timeout
        )

    @property
    def breaker_state(self) -> str:
        return self._circuit.state

    def close(self) -> None:
        self._session.close()

    def charge_card(
        self, idempotency_key: str, amount_minor: int, currency: str, token: str
    ) -> ProviderResult:
        body = {"amount": amount_minor, "currency": currency, "token": token}
        return self._send("/v1/charges", idempotency_key, body)

    def send_payout(
        self,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        beneficiary_name: str,
        iban: str,
    ) -> ProviderResult:
        body = {
            "amount": amount_minor,
            "currency": currency,
            "beneficiary": {"name": beneficiary_name, "iban": iban},
        }
        return self._send("/v1/payouts", idempotency_key, body)

    def _send(self, path: str, idempotency_key: str, body: dict) -> ProviderResult:
        if not idempotency_key:
            raise ValueError("every provider call needs an idempotency key")
        # The same bytes on every attempt: the provider compares bodies per key.
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            correlation.HEADER: correlation.current() or correlation.new_id(),
        }
        return self._retrying(path, idempotency_key)(self._attempt, path, data, headers)

    def _retrying(self, path: str, key: str) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=(
                tenacity.stop_after_attempt(self._max_attempts)
                | tenacity.stop_after_delay(self._retry_deadline)
            ),
            wait=tenacity.wait_random_exponential(multiplier=self._backoff, max=self._backoff_max),
            before_sleep=self._log_retry(path, key),
            reraise=True,
        )

    # -- the provider's records (reconciliation) -------------------------------

    def list_operations(
        self, kind: str, created_gte: datetime, created_lt: datetime
    ) -> Iterator[dict]:
        """Every charge or payout the provider made in [created_gte, created_lt), oldest first.

        The provider keeps whole seconds: the window is widened to them.
        """
        params = {
            "created_gte": math.floor(created_gte.timestamp()),
            "created_lt": math.ceil(created_lt.timestamp()),
            "limit": 100,
        }
        while True:
            page = self._read(f"/v1/{kind}s", params)
            data = page.get("data") if page else None
            if not isinstance(data, list):
                raise ProviderUnavailable("provider_bad_response", f"/v1/{kind}s: not a list")
            yield from data
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

    def retrieve(self, kind: str, reference: str) -> dict | None:
        """The provider's charge or payout by its id; None if it has none."""
        return self._read(f"/v1/{kind}s/{reference}", None, missing_ok=True)

    def _read(self, path: str, params: dict | None, missing_ok: bool = False) -> dict | None:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            correlation.HEADER: correlation.current() or correlation.new_id(),
        }
        return self._retrying(path, "")(self._read_attempt, path, params, headers, missing_ok)

    def _read_attempt(self, path: str, params, headers: dict, missing_ok: bool) -> dict | None:
        with self._circuit.guarded():
            response = self._request("GET", path, params=params, headers=headers)
            if response.status_code == 404 and missing_ok:
                return None
            body = _body(path, response)
        if response.status_code != 200:
            raise ProviderUnavailable(
                "provider_bad_response", f"{path}: HTTP {response.status_code}"
            )
        return body

    def _attempt(self, path: str, data: str, headers: dict) -> ProviderResult:
        with self._circuit.guarded():
            return _result(path, self._request("POST", path, data=data, headers=headers))

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One HTTP exchange; no answer at all is transient."""
        try:
            return self._session.request(
                method, self._base_url + path, timeout=self._timeout, **kwargs
            )
        except requests.Timeout as exc:
            raise _Transient("provider_timeout", f"{path}: {exc}") from exc
        except requests.RequestException as exc:  # refused, reset, DNS, TLS
            raise _Transient("provider_unreachable", f"{path}: {exc}") from exc

    def _log_retry(self, path: str, idempotency_key: str):
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "provider call failed; retrying",
                extra={
                    "provider": self.name,
                    "path": path,
                    "idempotency_key": idempotency_key,
                    "attempt": state.attempt_number,
                    "error": getattr(error, "code", type(error).__name__),
                    "retry_in_s": round(state.upcoming_sleep, 3),
                },
            )

        return before_sleep


def _body(path: str, response: requests.Response) -> dict:
    """The JSON object of an answer the provider gave, or why there is none to use."""
    status = response.status_code
    if status >= 500 or status == 429:
        raise _Transient("provider_error", f"{path}: HTTP {status}")
    if status in (401, 403):
        # Our credentials: nothing moved, and nothing will until an operator
        # fixes them, so the saga keeps retrying instead of failing customers.
        raise ProviderUnavailable("provider_auth_failed", f"{path}: HTTP {status}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnavailable("provider_bad_response", f"{path}: HTTP {status}, not JSON")
    return body


def _result(path: str, response: requests.Response) -> ProviderResult:
    status = response.status_code
    body = _body(path, response)
    if status in _REFUSED:
        error = body.get("error") or {}
        reason = body.get("failure_code") or error.get("code") or "refused"
        return ProviderResult(succeeded=False, reference=body.get("id"), reason=reason)
    if 200 <= status < 300:
        if body.get("status") == "succeeded":
            return ProviderResult(succeeded=True, reference=body.get("id"))
        if body.get("status") == "failed":
            return ProviderResult(False, body.get("id"), body.get("failure_code") or "refused")
        # Neither outcome: unknown, so ask again later rather than guess.
        raise ProviderUnavailable("provider_bad_response", f"{path}: status {body.get('status')}")
    code = (body.get("error") or {}).get("code") or f"http_{status}"
    if status == 409 and code == "idempotency_key_in_use":
        # Providers that answer this while the first request with the key is
        # still running (Stripe does) will have its answer shortly.
        raise _Transient(code, f"{path}: HTTP {status}")
    raise ProviderRejected(code, f"{path}: HTTP {status}")

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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import requests

# Callers catch these from here: the errors a provider call ends in.
from shared.provider_errors import ProviderRejected as ProviderRejected
from shared.provider_errors import ProviderUnavailable
from shared.providers import Guard, JsonApi, answer_body, refusal


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
    408, 429, 5xx and 409 idempotency_key_in_use are retried with exponential
    backoff and full jitter, within `max_attempts` and `retry_deadline`
    seconds; nothing else is (402/422 are answers: declines). A circuit
    breaker counts consecutive failed attempts: after `breaker_failures` it
    opens and calls fail at once with ProviderUnavailable("circuit_open")
    for `breaker_reset_timeout` seconds, then one trial call decides.
    `guard` are those options of shared.providers.Guard, with its defaults.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float | tuple[float, float] = (3.05, 10.0),
        *,
        name: str = "sandbox",
        pool_size: int = 10,
        **guard,
    ):
        self.name = name
        timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._api = JsonApi(name, base_url, api_key, timeout, pool_size)
        self._guard = Guard(f"payment-provider-{name}", **guard)

    @property
    def breaker_state(self) -> str:
        return self._guard.state

    def close(self) -> None:
        self._api.close()

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
        headers = self._api.headers(idempotency_key)
        return self._guard.call(
            lambda: _result(path, self._api.request("POST", path, headers, data=data)),
            provider=self.name,
            path=path,
            idempotency_key=idempotency_key,
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
        headers = self._api.headers()

        def attempt() -> dict | None:
            response = self._api.request("GET", path, headers, params=params)
            if response.status_code == 404 and missing_ok:
                return None
            body = _json_answer(path, response)
            if response.status_code != 200:
                raise ProviderUnavailable(
                    "provider_bad_response", f"{path}: HTTP {response.status_code}"
                )
            return body

        return self._guard.call(attempt, provider=self.name, path=path, idempotency_key="")


def _json_answer(path: str, response: requests.Response) -> dict:
    """The JSON object of an answer the provider gave, or why there is none to use."""
    body = answer_body(response, path)
    if body is None:
        status = response.status_code
        raise ProviderUnavailable("provider_bad_response", f"{path}: HTTP {status}, not JSON")
    return body


def _result(path: str, response: requests.Response) -> ProviderResult:
    status = response.status_code
    body = _json_answer(path, response)
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
    raise refusal(status, body, path)

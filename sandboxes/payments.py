"""A payment provider sandbox: a real HTTP server for development and tests.

    python -m sandboxes.payments --host 127.0.0.1 --port 8100

Environment: SANDBOX_HOST (127.0.0.1), SANDBOX_PORT (8100), SANDBOX_API_KEY
(sk_sandbox_dev), SANDBOX_WEBHOOK_URL (unset: no webhooks are sent),
SANDBOX_WEBHOOK_SECRET (whsec_sandbox_dev). Flags win over the environment.
State lives in memory: a restart forgets every charge and idempotency key.

API (JSON; amounts in integer minor units; every call needs
`Authorization: Bearer <api key>`, else 401; every POST to /v1 needs an
`Idempotency-Key` header, else 400):

    POST /v1/charges {amount, currency, token}
        "tok_ok"                  201 {id: "ch_...", status: "succeeded", ...}
        "tok_declined"            402 {status: "failed", failure_code: "card_declined"}
        "tok_insufficient_funds"  402 {status: "failed", failure_code: "insufficient_funds"}
        any other token           422 {error: {code: "invalid_token"}}
    POST /v1/payouts {amount, currency, beneficiary: {name, iban}}
        a valid IBAN              201 {id: "po_...", status: "succeeded", ...}
        one ending in "0000"      402 {status: "failed", failure_code: "account_closed"}
                                  (e.g. DE94370400440532010000)
        a malformed IBAN          422 {error: {code: "invalid_iban"}}
    GET /v1/charges/<id>, GET /v1/payouts/<id>     the object, or 404
    GET /v1/charges, GET /v1/payouts               the objects made (succeeded or
        failed), in creation order: {object: "list", data: [...], has_more};
        query: created_gte, created_lt (unix seconds), idempotency_key,
        limit (1-100, default 100), starting_after (an object id); 400 when
        one is malformed
    GET /health                                    200 (no key needed)

Idempotency (sandboxes/toolkit.py): the first answer to a key (201, 402 or
422) is kept; the same key with the same path and body gets it again, with
the header `Idempotent-Replayed: true`, and nothing happens twice. The same
key with a different body or path is 409 {error: {code:
"idempotency_key_reused"}}.

Webhooks: after each new charge or payout the sandbox POSTs, from a
background thread, to SANDBOX_WEBHOOK_URL:
    {event_id, type: "charge.succeeded"|"charge.failed"|"payout.succeeded"|
     "payout.failed", reference, idempotency_key, amount, currency,
     failure_code, occurred_at}
signed as shared.webhooks does: header `Sandbox-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "<t>.<body>">`. A delivery that does not get a 2xx is tried
again (5 attempts, backoff from 0.5 s), with the same event_id.

Test controls (also need the API key):

    POST /_sandbox/faults {"status": 503, "count": 2}
        the next 2 POSTs to /v1 answer 503 and do nothing
    POST /_sandbox/faults {"delay": 1.5, "count": 1}
        the next POST to /v1 is carried out, then its answer waits 1.5 s
        (a client with a shorter read timeout gives up; the money moved)
    DELETE /_sandbox/faults                  no more faults
    GET /_sandbox/stats                      operations made, webhooks sent,
                                             and the last 500 /v1 requests
    POST /_sandbox/webhooks/redeliver {"reference": "ch_..."}
                                             send that object's event again
    POST /_sandbox/reset                     forget everything
"""

import argparse
import json
import logging
import os
import re
import secrets
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import requests

from sandboxes.toolkit import (
    JsonHandler,
    JsonServer,
    Provider,
    Refusal,
    check_int,
    json_object,
    refused_in_production,
    serve,
)
from shared import iban as iban_format
from shared import webhooks

log = logging.getLogger("payments.sandbox")

DEFAULT_PORT = 8100
DEFAULT_API_KEY = "sk_sandbox_dev"
DEFAULT_WEBHOOK_SECRET = "whsec_sandbox_dev"  # noqa: S105 (development default)

CHARGE_OUTCOMES = {
    "tok_ok": None,
    "tok_declined": "card_declined",
    "tok_insufficient_funds": "insufficient_funds",
}
FAILING_IBAN_SUFFIX = "0000"

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_WEBHOOK_ATTEMPTS = 5
_WEBHOOK_BACKOFF = 0.5


class SandboxState(Provider):
    """The charges and payouts made, their events, and the webhook counts."""

    def __init__(self):
        super().__init__()
        self.objects: dict[str, dict] = {}
        self.events: dict[str, dict] = {}  # by object id
        self.created = {"charge": 0, "payout": 0}
        self.webhooks = {"sent": 0, "failed": 0}

    def forget(self) -> None:
        self.objects.clear()
        self.events.clear()
        self.created.update(charge=0, payout=0)
        self.webhooks.update(sent=0, failed=0)

    def stats(self) -> dict:
        return {"created": dict(self.created), "webhooks": dict(self.webhooks), **super().stats()}

    def record(self, answer: dict) -> dict | None:
        """Keep a charge or payout that was made (not a refusal); its event."""
        if "id" not in answer:
            return None
        self.objects[answer["id"]] = answer
        self.created[answer["object"]] += 1
        self.events[answer["id"]] = event = _event(answer)
        return event


class WebhookSender:
    """Delivers signed events in the background, retrying until a 2xx."""

    def __init__(self, url: str | None, secret: str, state: SandboxState):
        self.url = url
        self._secret = secret
        self._state = state
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")
        self._session = requests.Session()

    def send(self, event: dict) -> None:
        if self.url:
            self._pool.submit(self._deliver, event)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, event: dict) -> None:
        body = json.dumps(event).encode()
        for attempt in range(1, _WEBHOOK_ATTEMPTS + 1):
            headers = {
                "Content-Type": "application/json",
                webhooks.SIGNATURE_HEADER: webhooks.sign(self._secret, body, int(time.time())),
            }
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=10)
                if 200 <= response.status_code < 300:
                    with self._state.lock:
                        self._state.webhooks["sent"] += 1
                    return
                outcome = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            log.warning(
                "webhook delivery failed",
                extra={"event_id": event["event_id"], "attempt": attempt, "outcome": outcome},
            )
            if attempt < _WEBHOOK_ATTEMPTS:
                time.sleep(_WEBHOOK_BACKOFF * 2 ** (attempt - 1))
        with self._state.lock:
            self._state.webhooks["failed"] += 1


class SandboxServer(JsonServer):
    def __init__(
        self,
        address: tuple[str, int],
        api_key: str = DEFAULT_API_KEY,
        webhook_url: str | None = None,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
    ):
        super().__init__(address, SandboxHandler)
        self.api_key = api_key
        self.state = SandboxState()
        self.webhooks = WebhookSender(webhook_url, webhook_secret, self.state)

    def server_close(self) -> None:
        super().server_close()
        self.webhooks.close()


class SandboxHandler(JsonHandler):
    server: SandboxServer
    server_version = "PaymentSandbox/1"
    log = log
    request_log_level = logging.INFO

    def provider_at(self, path: str) -> SandboxState | None:
        return self.server.state if path.startswith("/v1/") else None

    def route(self, method: str, path: str, raw: bytes) -> None:
        self.authenticate(self.server.api_key)
        if path.startswith("/_sandbox/"):
            return self._control(method, path, raw)
        if path.startswith("/v1/"):
            return self._api(method, path, raw)
        raise Refusal(404, "not_found", f"No such endpoint: {method} {path}")

    # --- the provider's API -------------------------------------------------

    def _api(self, method: str, path: str, raw: bytes) -> None:
        state = self.server.state
        if method == "GET":
            kind, _, object_id = path[len("/v1/") :].partition("/")
            if kind in ("charges", "payouts") and not object_id:
                return self.send_json(200, self._list(kind[:-1]))
            with state.lock:
                found = state.objects.get(object_id)
            if kind not in ("charges", "payouts") or found is None:
                raise Refusal(404, "not_found", f"No such object: {object_id}")
            return self.send_json(200, found)
        if method != "POST" or path not in ("/v1/charges", "/v1/payouts"):
            raise Refusal(404, "not_found", f"No such endpoint: {method} {path}")
        make = _charge if path == "/v1/charges" else _payout

        def act(body: dict) -> tuple[int, dict]:
            status, answer = make(body, self.headers["Idempotency-Key"])
            event = state.record(answer)
            if event is not None:
                self.server.webhooks.send(event)
            return status, answer

        self.post_once(state, path, raw, act)

    def _list(self, kind: str) -> dict:
        """A page of the objects of a kind, in creation order (Stripe-like)."""
        query = urllib.parse.parse_qs(self.path.partition("?")[2])
        one = {name: values[-1] for name, values in query.items()}
        gte = _query_int(one, "created_gte", 0, default=0)
        lt = _query_int(one, "created_lt", 0, default=None)
        limit = _query_int(one, "limit", 1, default=100)
        if limit > 100:
            raise Refusal(400, "invalid_request", "limit must be between 1 and 100.")
        key, after = one.get("idempotency_key"), one.get("starting_after")
        with self.server.state.lock:
            objects = [o for o in self.server.state.objects.values() if o["object"] == kind]
        if after is not None:
            ids = [o["id"] for o in objects]
            if after not in ids:
                raise Refusal(400, "invalid_request", "starting_after is not an object id.")
            objects = objects[ids.index(after) + 1 :]
        matching = [
            o
            for o in objects
            if o["created"] >= gte
            and (lt is None or o["created"] < lt)
            and (key is None or o["idempotency_key"] == key)
        ]
        return {"object": "list", "data": matching[:limit], "has_more": len(matching) > limit}

    # --- test controls ------------------------------------------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        if self.controls(self.server.state, method, path, raw):
            return None
        if path == "/_sandbox/webhooks/redeliver" and method == "POST":
            reference = json_object(raw).get("reference")
            with self.server.state.lock:
                event = self.server.state.events.get(reference)
            if event is None:
                raise Refusal(404, "not_found", f"No event for {reference!r}")
            self.server.webhooks.send(event)
            return self.send_json(202, {"event_id": event["event_id"]})
        raise Refusal(404, "not_found", f"No such control: {method} {path}")


def _query_int(query: dict, name: str, minimum: int, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return check_int(int(raw), name, minimum)
    except ValueError:
        raise Refusal(400, "invalid_request", f"{name} must be an integer.") from None


def _money(body: dict) -> tuple[int, str]:
    amount, currency = body.get("amount"), body.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise Refusal(400, "invalid_amount", "amount must be a positive integer (minor units).")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise Refusal(400, "invalid_currency", "currency must be an ISO 4217 code.")
    return amount, currency


def _new_object(kind: str, prefix: str, key: str, amount: int, currency: str, failure):
    return {
        "id": f"{prefix}_{secrets.token_hex(12)}",
        "object": kind,
        "status": "failed" if failure else "succeeded",
        "failure_code": failure,
        "amount": amount,
        "currency": currency,
        "idempotency_key": key,
        "created": int(time.time()),
    }


def _charge(body: dict, key: str) -> tuple[int, dict]:
    amount, currency = _money(body)
    token = body.get("token")
    if not isinstance(token, str) or token not in CHARGE_OUTCOMES:
        return 422, {"error": {"code": "invalid_token", "message": "Unknown card token."}}
    failure = CHARGE_OUTCOMES[token]
    charge = _new_object("charge", "ch", key, amount, currency, failure)
    return (402 if failure else 201), charge


def _payout(body: dict, key: str) -> tuple[int, dict]:
    amount, currency = _money(body)
    beneficiary = body.get("beneficiary")
    if not isinstance(beneficiary, dict) or not str(beneficiary.get("name") or "").strip():
        raise Refusal(400, "invalid_beneficiary", "beneficiary needs a name and an iban.")
    iban = iban_format.normalise(str(beneficiary.get("iban") or ""))
    if not iban_format.is_valid(iban):
        return 422, {"error": {"code": "invalid_iban", "message": "Not a valid IBAN."}}
    failure = "account_closed" if iban.endswith(FAILING_IBAN_SUFFIX) else None
    payout = _new_object("payout", "po", key, amount, currency, failure)
    payout["beneficiary"] = {"name": beneficiary["name"], "iban_last4": iban[-4:]}
    return (402 if failure else 201), payout


def _event(obj: dict) -> dict:
    return {
        "event_id": f"evt_{secrets.token_hex(12)}",
        "type": f"{obj['object']}.{obj['status']}",
        "reference": obj["id"],
        "idempotency_key": obj["idempotency_key"],
        "amount": obj["amount"],
        "currency": obj["currency"],
        "failure_code": obj["failure_code"],
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    from shared import logs

    logs.configure("payments-sandbox")
    parser = argparse.ArgumentParser(description="Payment provider sandbox (HTTP).")
    parser.add_argument("--host", default=os.environ.get("SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SANDBOX_PORT", DEFAULT_PORT))
    )
    args = parser.parse_args(argv)
    api_key = os.environ.get("SANDBOX_API_KEY") or DEFAULT_API_KEY
    webhook_secret = os.environ.get("SANDBOX_WEBHOOK_SECRET") or DEFAULT_WEBHOOK_SECRET
    dev_secrets = api_key == DEFAULT_API_KEY or webhook_secret == DEFAULT_WEBHOOK_SECRET
    if refused_in_production(dev_secrets, "SANDBOX_API_KEY and SANDBOX_WEBHOOK_SECRET"):
        return 2
    if dev_secrets:
        log.warning("payment sandbox uses its built-in development key or webhook secret")
    server = SandboxServer(
        (args.host, args.port),
        api_key=api_key,
        webhook_url=os.environ.get("SANDBOX_WEBHOOK_URL") or None,
        webhook_secret=webhook_secret,
    )
    log.info(
        "payment sandbox listening",
        extra={"url": server.url, "webhook_url": server.webhooks.url},
    )
    return serve(server)


if __name__ == "__main__":
    sys.exit(main())

"""A payment provider sandbox: a real HTTP server for development and tests.

    python -m services.payments.sandbox --host 127.0.0.1 --port 8100

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

Idempotency: the first answer to a key (201, 402 or 422) is kept; the same
key with the same method, path and body gets it again, with the header
`Idempotent-Replayed: true`, and nothing happens twice. The same key with a
different body or path is 409 {error: {code: "idempotency_key_reused"}}.

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
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

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

_MAX_BODY = 64 * 1024
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_KEY = 255
_WEBHOOK_ATTEMPTS = 5
_WEBHOOK_BACKOFF = 0.5


class _Refusal(Exception):
    """An answer other than success, carried out of the request's processing."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


@dataclass
class _Fault:
    count: int = 0
    status: int | None = None
    delay: float = 0.0


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: dict


@dataclass
class SandboxState:
    """Everything the sandbox remembers, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, dict] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)  # by object id
    answers: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    fault: _Fault = field(default_factory=_Fault)
    requests: deque = field(default_factory=lambda: deque(maxlen=500))
    created: dict[str, int] = field(default_factory=lambda: {"charge": 0, "payout": 0})
    webhooks: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0})

    def reset(self) -> None:
        with self.lock:
            self.objects.clear()
            self.events.clear()
            self.answers.clear()
            self.fault = _Fault()
            self.requests.clear()
            self.created.update(charge=0, payout=0)
            self.webhooks.update(sent=0, failed=0)


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


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

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

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.webhooks.close()


class SandboxHandler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "PaymentSandbox/1"

    # --- plumbing -----------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):
        log.info("request", extra={"client": self.client_address[0], "line": format % args})

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
            if path == "/health" and method == "GET":
                return self._send(200, {"status": "ok"})
            self._authenticate()
            if path.startswith("/_sandbox/"):
                return self._control(method, path, raw)
            if path.startswith("/v1/"):
                return self._api(method, path, raw)
            raise _Refusal(404, "not_found", f"No such endpoint: {method} {path}")
        except _Refusal as refusal:
            if path.startswith("/v1/"):
                self._note(method, path, self.headers.get("Idempotency-Key") or "", refusal.status)
            self._send(refusal.status, refusal.body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            raise _Refusal(413, "body_too_large", f"At most {_MAX_BODY} bytes.")
        return self.rfile.read(length) if length else b""

    def _authenticate(self) -> None:
        scheme, _, key = (self.headers.get("Authorization") or "").partition(" ")
        expected = self.server.api_key.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), expected):
            raise _Refusal(401, "invalid_api_key", "Send Authorization: Bearer <api key>.")

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its read timeout): what it asked for stands.
            self.close_connection = True

    @staticmethod
    def _json(raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise _Refusal(400, "invalid_json", "The body is not JSON.") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "invalid_json", "The body must be a JSON object.")
        return body

    # --- the provider's API -------------------------------------------------

    def _api(self, method: str, path: str, raw: bytes) -> None:
        state = self.server.state
        if method == "GET":
            kind, _, object_id = path[len("/v1/") :].partition("/")
            if kind in ("charges", "payouts") and not object_id:
                return self._send(200, self._list(kind[:-1]))
            with state.lock:
                found = state.objects.get(object_id)
            if kind not in ("charges", "payouts") or found is None:
                raise _Refusal(404, "not_found", f"No such object: {object_id}")
            return self._send(200, found)
        if method != "POST" or path not in ("/v1/charges", "/v1/payouts"):
            raise _Refusal(404, "not_found", f"No such endpoint: {method} {path}")
        key = self.headers.get("Idempotency-Key") or ""
        fault = self._take_fault()
        if fault.status is not None:
            self._note(method, path, key, fault.status)
            return self._send(fault.status, {"error": {"code": "injected_fault"}})
        status, body, replayed, event = self._perform(path, key, raw)
        self._note(method, path, key, status, replayed)
        if event is not None:
            self.server.webhooks.send(event)
        if fault.delay:
            time.sleep(fault.delay)
        self._send(status, body, {"Idempotent-Replayed": "true"} if replayed else None)

    def _list(self, kind: str) -> dict:
        """A page of the objects of a kind, in creation order (Stripe-like)."""
        query = urllib.parse.parse_qs(self.path.partition("?")[2])
        one = {name: values[-1] for name, values in query.items()}
        gte = _query_int(one, "created_gte", 0, default=0)
        lt = _query_int(one, "created_lt", 0, default=None)
        limit = _query_int(one, "limit", 1, default=100)
        if limit > 100:
            raise _Refusal(400, "invalid_request", "limit must be between 1 and 100.")
        key, after = one.get("idempotency_key"), one.get("starting_after")
        with self.server.state.lock:
            objects = [o for o in self.server.state.objects.values() if o["object"] == kind]
        if after is not None:
            ids = [o["id"] for o in objects]
            if after not in ids:
                raise _Refusal(400, "invalid_request", "starting_after is not an object id.")
            objects = objects[ids.index(after) + 1 :]
        matching = [
            o
            for o in objects
            if o["created"] >= gte
            and (lt is None or o["created"] < lt)
            and (key is None or o["idempotency_key"] == key)
        ]
        return {"object": "list", "data": matching[:limit], "has_more": len(matching) > limit}

    def _take_fault(self) -> _Fault:
        with self.server.state.lock:
            fault = self.server.state.fault
            if fault.count <= 0:
                return _Fault()
            fault.count -= 1
            return _Fault(1, fault.status, fault.delay)

    def _note(self, method, path, key, status, replayed=False) -> None:
        with self.server.state.lock:
            self.server.state.requests.append(
                {
                    "method": method,
                    "path": path,
                    "idempotency_key": key,
                    "status": status,
                    "replayed": replayed,
                }
            )

    def _perform(self, path: str, key: str, raw: bytes):
        if not key or len(key) > _MAX_KEY:
            raise _Refusal(400, "idempotency_key_required", "Send an Idempotency-Key header.")
        body = self._json(raw)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(f"POST {path} {canonical}".encode()).hexdigest()
        state = self.server.state
        # One lock around check-and-act: two requests with one key never both act.
        with state.lock:
            stored = state.answers.get((self.server.api_key, key))
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise _Refusal(
                        409,
                        "idempotency_key_reused",
                        "This Idempotency-Key was used with another request.",
                    )
                return stored.status, stored.body, True, None
            if path == "/v1/charges":
                status, answer = _charge(body, key)
            else:
                status, answer = _payout(body, key)
            event = None
            if "id" in answer:
                state.objects[answer["id"]] = answer
                state.created[answer["object"]] += 1
                event = _event(answer)
                state.events[answer["id"]] = event
            state.answers[(self.server.api_key, key)] = _Stored(fingerprint, status, answer)
        return status, answer, False, event

    # --- test controls ------------------------------------------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        state = self.server.state
        if path == "/_sandbox/faults" and method == "POST":
            body = self._json(raw)
            fault = _Fault(
                count=_int(body.get("count", 1), "count", minimum=0),
                status=_int(body["status"], "status", minimum=400) if "status" in body else None,
                delay=float(body.get("delay") or 0),
            )
            with state.lock:
                state.fault = fault
            return self._send(200, {"count": fault.count, "status": fault.status})
        if path == "/_sandbox/faults" and method == "DELETE":
            with state.lock:
                state.fault = _Fault()
            return self._send(200, {"count": 0})
        if path == "/_sandbox/stats" and method == "GET":
            with state.lock:
                stats = {
                    "created": dict(state.created),
                    "webhooks": dict(state.webhooks),
                    "requests": list(state.requests),
                }
            return self._send(200, stats)
        if path == "/_sandbox/webhooks/redeliver" and method == "POST":
            reference = self._json(raw).get("reference")
            with state.lock:
                event = state.events.get(reference)
            if event is None:
                raise _Refusal(404, "not_found", f"No event for {reference!r}")
            self.server.webhooks.send(event)
            return self._send(202, {"event_id": event["event_id"]})
        if path == "/_sandbox/reset" and method == "POST":
            state.reset()
            return self._send(200, {"reset": True})
        raise _Refusal(404, "not_found", f"No such control: {method} {path}")


def _int(value, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _Refusal(400, "invalid_request", f"{name} must be an integer >= {minimum}.")
    return value


def _query_int(query: dict, name: str, minimum: int, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return _int(int(raw), name, minimum)
    except ValueError:
        raise _Refusal(400, "invalid_request", f"{name} must be an integer.") from None


def _money(body: dict) -> tuple[int, str]:
    amount, currency = body.get("amount"), body.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise _Refusal(400, "invalid_amount", "amount must be a positive integer (minor units).")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise _Refusal(400, "invalid_currency", "currency must be an ISO 4217 code.")
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
        raise _Refusal(400, "invalid_beneficiary", "beneficiary needs a name and an iban.")
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
    from shared import config, logs

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
    if dev_secrets and config.is_production():
        # The development secrets are in this file: anyone could use them.
        print(
            "ENVIRONMENT=production: set SANDBOX_API_KEY and SANDBOX_WEBHOOK_SECRET",
            file=sys.stderr,
        )
        return 2
    if dev_secrets:
        log.warning("payment sandbox uses its built-in development key or webhook secret")
    server = SandboxServer(
        (args.host, args.port),
        api_key=api_key,
        webhook_url=os.environ.get("SANDBOX_WEBHOOK_URL") or None,
        webhook_secret=webhook_secret,
    )
    # honcho and container runtimes stop processes with SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info(
        "payment sandbox listening",
        extra={"url": server.url, "webhook_url": server.webhooks.url},
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

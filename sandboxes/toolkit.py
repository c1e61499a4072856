"""What the provider sandboxes share: a JSON HTTP server, fault injection,
idempotent replay, and how they start and stop.

A sandbox's handler derives from JsonHandler and answers in `route()`.
Its provider API lives in a Provider (one lock over everything the
provider remembers); a POST that must act once per Idempotency-Key goes
through `JsonHandler.post_once`, the test controls every provider has
(faults, stats, reset) through `JsonHandler.controls`.

Idempotency: the first answer to a key is kept; the same key with the same
path and body gets it again, with the header `Idempotent-Replayed: true`,
and nothing happens twice; another path or body is 409
idempotency_key_reused. A request refused before it could act (no key,
a malformed body) keeps nothing, as Stripe does.

Faults: POST /_sandbox/faults {"status": 503, "count": 2} makes the next 2
such POSTs answer 503 and do nothing; {"delay": 1.5, "count": 1} carries the
next one out, then makes its answer wait 1.5 s (a client with a shorter read
timeout gives up, though the provider acted).
"""

import hashlib
import hmac
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MAX_BODY = 64 * 1024
MAX_KEY = 255


class Refusal(Exception):
    """An answer other than success, carried out of the request's processing."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


def check_int(value, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise Refusal(400, "invalid_request", f"{name} must be an integer >= {minimum}.")
    return value


def json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise Refusal(400, "invalid_json", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_json", "The body must be a JSON object.")
    return body


# -- faults and first answers ----------------------------------------------------


@dataclass
class Fault:
    count: int = 0
    status: int | None = None  # an HTTP status, or an SMTP reply code for mail
    delay: float = 0.0

    @classmethod
    def from_request(cls, body: dict) -> "Fault":
        return cls(
            count=check_int(body.get("count", 1), "count", 0),
            status=check_int(body["status"], "status", 400) if "status" in body else None,
            delay=float(body.get("delay") or 0),
        )


class Faults:
    """The fault asked for, counted down by the requests it hits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = Fault()

    def set(self, fault: Fault) -> None:
        with self._lock:
            self._next = fault

    def take(self) -> Fault | None:
        """The fault for this request, if one is still asked for."""
        with self._lock:
            if self._next.count <= 0:
                return None
            self._next.count -= 1
            return Fault(1, self._next.status, self._next.delay)


@dataclass
class _Answer:
    fingerprint: str
    status: int
    body: dict


class Provider:
    """What one provider API remembers: first answers by key, its faults, the
    last 500 requests. Subclasses keep their own records under the same lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = Faults()
        self._answers: dict[str, _Answer] = {}
        self._requests: deque = deque(maxlen=500)

    def answer(
        self, key: str, fingerprint: str, act: Callable[[], tuple[int, dict]]
    ) -> tuple[int, dict, bool]:
        """(status, body, replayed): the first answer to `key` again, or what
        `act` answers now. One lock around check-and-act: two requests with one
        key never both act. A Refusal raised by `act` is not kept."""
        with self.lock:
            stored = self._answers.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise Refusal(
                        409,
                        "idempotency_key_reused",
                        "This Idempotency-Key was used with another request.",
                    )
                return stored.status, stored.body, True
            status, body = act()
            self._answers[key] = _Answer(fingerprint, status, body)
            return status, body, False

    def note(self, method: str, path: str, key: str, status: int, **flags) -> None:
        record = {"method": method, "path": path, "idempotency_key": key, "status": status}
        with self.lock:
            self._requests.append({**record, "replayed": False, "fault": False, **flags})

    def stats(self) -> dict:
        """GET /_sandbox/stats; subclasses add their counts (called under the lock)."""
        return {"requests": list(self._requests)}

    def reset(self) -> None:
        self.faults.set(Fault())
        with self.lock:
            self._answers.clear()
            self._requests.clear()
            self.forget()

    def forget(self) -> None:
        """Clear what a subclass keeps (called by reset, under the lock)."""


# -- HTTP ------------------------------------------------------------------------


class JsonServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class JsonHandler(BaseHTTPRequestHandler):
    """JSON in and out; GET /health answers without a key.

    Subclasses answer in `route()` and name in `provider_at()` the Provider
    whose API a path is, so that refusals there show in its stats.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    log = logging.getLogger("sandboxes")
    request_log_level = logging.DEBUG

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):
        extra = {"client": self.client_address[0], "line": format % args}
        self.log.log(self.request_log_level, "request", extra=extra)

    def route(self, method: str, path: str, raw: bytes) -> None:
        raise NotImplementedError

    def provider_at(self, path: str) -> Provider | None:
        return None

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            raw = self._read_body()
            if path == "/health" and method == "GET":
                return self.send_json(200, {"status": "ok"})
            self.route(method, path, raw)
        except Refusal as refusal:
            provider = self.provider_at(path)
            if provider is not None:
                key = self.headers.get("Idempotency-Key") or ""
                provider.note(method, path, key, refusal.status)
            self.send_json(refusal.status, refusal.body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True  # the body is left unread
            raise Refusal(413, "body_too_large", f"At most {MAX_BODY} bytes.")
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
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

    def authenticate(self, api_key: str) -> None:
        scheme, _, key = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode(), api_key.encode()
        ):
            raise Refusal(401, "invalid_api_key", "Send Authorization: Bearer <api key>.")

    def post_once(
        self, provider: Provider, path: str, raw: bytes, act: Callable[[dict], tuple[int, dict]]
    ) -> None:
        """A POST that acts once per Idempotency-Key: the fault asked for, or
        the first answer to the key, or what `act(body)` answers."""
        key = self.headers.get("Idempotency-Key") or ""
        fault = provider.faults.take() or Fault()
        if fault.status is not None:
            provider.note("POST", path, key, fault.status, fault=True)
            error = {"code": "injected_fault", "message": "A fault the sandbox was asked for."}
            return self.send_json(fault.status, {"error": error})
        if not key or len(key) > MAX_KEY:
            raise Refusal(400, "idempotency_key_required", "Send an Idempotency-Key header.")
        body = json_object(raw)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(f"POST {path} {canonical}".encode()).hexdigest()
        status, answer, replayed = provider.answer(key, fingerprint, lambda: act(body))
        provider.note("POST", path, key, status, replayed=replayed)
        if fault.delay:
            time.sleep(fault.delay)
        self.send_json(status, answer, {"Idempotent-Replayed": "true"} if replayed else None)

    def controls(self, provider: Provider, method: str, path: str, raw: bytes) -> bool:
        """The test controls under /_sandbox/ every provider has; False if
        `path` is none of them."""
        if path == "/_sandbox/faults" and method == "POST":
            fault = Fault.from_request(json_object(raw))
            provider.faults.set(fault)
            self.send_json(200, {"count": fault.count, "status": fault.status})
        elif path == "/_sandbox/faults" and method == "DELETE":
            provider.faults.set(Fault())
            self.send_json(200, {"count": 0})
        elif path == "/_sandbox/stats" and method == "GET":
            with provider.lock:
                stats = provider.stats()
            self.send_json(200, stats)
        elif path == "/_sandbox/reset" and method == "POST":
            provider.reset()
            self.send_json(200, {"reset": True})
        else:
            return False
        return True


# -- start and stop --------------------------------------------------------------


def refused_in_production(development_keys: bool, variables: str) -> bool:
    """True, saying so on stderr, when the built-in development keys would
    serve with ENVIRONMENT=production: they are in git, anyone could use them."""
    from shared import config

    if development_keys and config.is_production():
        print(f"ENVIRONMENT=production: set {variables}", file=sys.stderr)
        return True
    return False


def serve(server: ThreadingHTTPServer, *also_stop: Callable[[], None]) -> int:
    """Serve until SIGTERM (honcho, container runtimes) or Ctrl-C; then close
    the server and whatever else runs beside it."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        for stop in also_stop:
            stop()
    return 0

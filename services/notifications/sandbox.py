"""Notification providers sandbox: a real SMTP server and SMS and push HTTP APIs.

    python -m services.notifications.sandbox --host 127.0.0.1 \\
        --smtp-port 8025 --http-port 8110 --mail-dir var/mail

Development and tests only. Environment (flags win): SMTP_PORT (8025),
NOTIFICATIONS_SANDBOX_HOST (127.0.0.1), NOTIFICATIONS_SANDBOX_PORT (8110),
NOTIFICATIONS_SANDBOX_MAIL_DIR (DATA_DIR/mail), and the API keys it accepts,
NOTIFICATIONS_SMS_API_KEY (sms_sandbox_dev) and NOTIFICATIONS_PUSH_API_KEY
(push_sandbox_dev): the same variables the service sends them from.

SMTP (aiosmtpd): every message accepted is stored in the Maildir
`--mail-dir` (read it with any mail client, Python's mailbox.Maildir, or
GET /mail/messages), with the headers X-Sandbox-Id, X-Sandbox-Received-At
and X-Sandbox-Rcpt-To added. Recipients at the domain `reject.test` are
refused with 550 (a permanent failure).

HTTP (one server, one path prefix per provider; JSON):

    GET  /health                               200 (no key needed)
    GET  /mail/messages                        {items: [{id, from, to, subject, text,
                                                 message_id, received_at}]}, oldest first
    POST /mail/_sandbox/faults {"count": 2, "code": 451}
                                               the next 2 messages get that SMTP reply at
                                               DATA (4xx: try later, 5xx: refused); also
                                               "delay" (seconds before answering)
    DELETE /mail/_sandbox/faults               no more faults
    POST /mail/_sandbox/reset                  empty the Maildir, forget faults

    Providers "sms" and "push" (every call needs `Authorization: Bearer <key>`,
    else 401; POST /v1/messages needs `Idempotency-Key`, else 400):
    POST /sms/v1/messages {to, text}           201 {id: "sms_...", status: "delivered", ...}
        `to` not E.164                         422 {error: {code: "invalid_number"}}
        `to` ending in 0000                    422 {error: {code: "number_unreachable"}}
    POST /push/v1/messages {token, title, text}  201 {id: "push_...", status: "delivered"}
        token starting with "unregistered"     422 {error: {code: "token_unregistered"}}
    GET  /<provider>/v1/messages               {items: [...]} every message accepted
    POST /<provider>/_sandbox/faults {"status": 503, "count": 2}
                                               the next 2 POSTs answer 503 and do nothing;
                                               {"delay": 1.5, "count": 1}: carried out, the
                                               answer waits 1.5 s
    DELETE /<provider>/_sandbox/faults
    GET  /<provider>/_sandbox/stats            {requests: [{idempotency_key, status,
                                                 replayed, fault}], accepted: n}
    POST /<provider>/_sandbox/reset

Idempotency as the payments sandbox: the first answer to a key is kept;
the same key and body get it again (header `Idempotent-Replayed: true`),
another body is 409 idempotency_key_reused. State other than the Maildir
lives in memory.
"""

import argparse
import email
import email.policy
import hashlib
import json
import logging
import mailbox
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("notifications.sandbox")

DEFAULT_SMTP_PORT = 8025
DEFAULT_HTTP_PORT = 8110
DEFAULT_SMS_API_KEY = "sms_sandbox_dev"
DEFAULT_PUSH_API_KEY = "push_sandbox_dev"
REJECTED_DOMAIN = "reject.test"

_MAX_BODY = 64 * 1024
_MAX_KEY = 255
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


# -- SMTP ------------------------------------------------------------------------


@dataclass
class _MailFault:
    count: int = 0
    code: int = 451
    delay: float = 0.0


class MailStore:
    """The Maildir every accepted message goes to, and the SMTP fault switch."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(str(self.path), create=True)
        for sub in ("tmp", "new", "cur"):  # a directory made by someone else
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.fault = _MailFault()

    def take_fault(self) -> _MailFault | None:
        with self._lock:
            if self.fault.count <= 0:
                return None
            self.fault.count -= 1
            return _MailFault(1, self.fault.code, self.fault.delay)

    def set_fault(self, fault: _MailFault) -> None:
        with self._lock:
            self.fault = fault

    def add(self, content: bytes, rcpt_tos: list[str]) -> str:
        message_id = f"mail_{secrets.token_hex(8)}"
        headers = (
            f"X-Sandbox-Id: {message_id}\r\n"
            f"X-Sandbox-Received-At: {datetime.now(UTC).isoformat()}\r\n"
            f"X-Sandbox-Rcpt-To: {', '.join(rcpt_tos)}\r\n"
        ).encode()
        with self._lock:
            self._maildir.add(headers + content)
        return message_id

    def messages(self) -> list[dict]:
        with self._lock:
            raw = [self._maildir.get_bytes(key) for key in self._maildir.iterkeys()]
        items = [parse_mail(content) for content in raw]
        return sorted(items, key=lambda item: (item["received_at"] or "", item["id"] or ""))

    def reset(self) -> None:
        with self._lock:
            self._maildir.clear()
            self.fault = _MailFault()


def parse_mail(content: bytes) -> dict:
    """A stored message as the listing shows it (also used by tests on the Maildir)."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    return {
        "id": message.get("X-Sandbox-Id"),
        "received_at": message.get("X-Sandbox-Received-At"),
        "rcpt_to": [a.strip() for a in str(message.get("X-Sandbox-Rcpt-To") or "").split(",") if a],
        "from": str(message.get("From") or ""),
        "to": str(message.get("To") or ""),
        "subject": str(message.get("Subject") or ""),
        "message_id": str(message.get("Message-ID") or ""),
        "notification_id": message.get("X-Notification-ID"),
        "text": part.get_content().replace("\r\n", "\n") if part is not None else "",
    }


class SmtpHandler:
    """aiosmtpd handler: store what arrives, or answer with the fault asked for."""

    def __init__(self, store: MailStore):
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith("@" + REJECTED_DOMAIN):
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        fault = self.store.take_fault()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            kind = "Try again later" if fault.code < 500 else "Refused"
            return f"{fault.code} {'4' if fault.code < 500 else '5'}.3.0 {kind} (sandbox fault)"
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        message_id = self.store.add(content, list(envelope.rcpt_tos))
        log.info("mail received", extra={"id": message_id, "rcpt_to": envelope.rcpt_tos})
        return f"250 2.0.0 Message accepted as {message_id}"


def start_smtp(store: MailStore, host: str, port: int):
    from aiosmtpd.controller import Controller

    controller = Controller(SmtpHandler(store), hostname=host, port=port)
    controller.start()
    return controller


# -- SMS and push providers --------------------------------------------------------


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
class ProviderState:
    name: str
    api_key: str
    prefix: str  # id prefix: sms_..., push_...
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list = field(default_factory=list)
    answers: dict = field(default_factory=dict)
    fault: _Fault = field(default_factory=_Fault)
    requests: deque = field(default_factory=lambda: deque(maxlen=500))

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.answers.clear()
            self.fault = _Fault()
            self.requests.clear()

    def accept(self, body: dict) -> tuple[int, dict]:
        if self.name == "sms":
            to, text = body.get("to"), body.get("text")
            if not isinstance(text, str) or not text or len(text) > 1600:
                raise _Refusal(400, "invalid_text", "text must be 1 to 1600 characters.")
            if not isinstance(to, str) or not _E164.match(to):
                return 422, {"error": {"code": "invalid_number", "message": "Not E.164."}}
            if to.endswith("0000"):
                return 422, {"error": {"code": "number_unreachable", "message": "Unreachable."}}
            record = {"to": to, "text": text}
        else:
            token, title, text = body.get("token"), body.get("title"), body.get("text")
            if not isinstance(token, str) or not token.strip():
                raise _Refusal(400, "invalid_token", "token must not be empty.")
            if not isinstance(text, str) or not text:
                raise _Refusal(400, "invalid_text", "text must not be empty.")
            if token.startswith("unregistered"):
                return 422, {"error": {"code": "token_unregistered", "message": "Unknown device."}}
            record = {"token": token, "title": title or "", "text": text}
        message = {
            "id": f"{self.prefix}_{secrets.token_hex(10)}",
            "status": "delivered",
            **record,
            "created": datetime.now(UTC).isoformat(),
        }
        self.messages.append(message)
        return 201, message


class SandboxHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, store: MailStore, sms_api_key: str, push_api_key: str):
        super().__init__(address, SandboxHandler)
        self.store = store
        self.providers = {
            "sms": ProviderState("sms", sms_api_key, "sms"),
            "push": ProviderState("push", push_api_key, "push"),
        }

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class SandboxHandler(BaseHTTPRequestHandler):
    server: SandboxHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("http " + fmt, *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise _Refusal(413, "too_large", "Body too large.")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise _Refusal(400, "invalid_json", "Body must be JSON.") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "invalid_json", "Body must be a JSON object.")
        return body

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            raw = self._body()
            if path == "/health":
                return self._send(200, {"status": "ok"})
            first, _, rest = path.lstrip("/").partition("/")
            if first == "mail":
                return self._mail(method, "/" + rest, raw)
            if first in self.server.providers:
                return self._provider(self.server.providers[first], method, "/" + rest, raw)
            raise _Refusal(404, "not_found", f"No such path: {path}")
        except _Refusal as refusal:
            self._send(refusal.status, refusal.body)

    # --- mail ----------------------------------------------------------------

    def _mail(self, method: str, path: str, raw: bytes) -> None:
        store = self.server.store
        if path == "/messages" and method == "GET":
            return self._send(200, {"items": store.messages()})
        if path == "/_sandbox/faults" and method == "POST":
            body = self._json(raw)
            fault = _MailFault(
                count=_int(body.get("count", 1), "count", 0),
                code=_int(body.get("code", 451), "code", 400),
                delay=float(body.get("delay") or 0),
            )
            if fault.code >= 600:
                raise _Refusal(400, "invalid_request", "code must be a 4xx or 5xx SMTP reply.")
            store.set_fault(fault)
            return self._send(200, {"count": fault.count, "code": fault.code})
        if path == "/_sandbox/faults" and method == "DELETE":
            store.set_fault(_MailFault())
            return self._send(200, {"count": 0})
        if path == "/_sandbox/reset" and method == "POST":
            store.reset()
            return self._send(200, {"reset": True})
        raise _Refusal(404, "not_found", f"No such mail path: {method} {path}")

    # --- SMS and push ---------------------------------------------------------

    def _provider(self, state: ProviderState, method: str, path: str, raw: bytes) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != state.api_key:
            raise _Refusal(401, "unauthorized", "Send Authorization: Bearer <api key>.")
        if path == "/v1/messages" and method == "POST":
            return self._post_message(state, raw)
        if path == "/v1/messages" and method == "GET":
            with state.lock:
                return self._send(200, {"items": list(state.messages)})
        if path == "/_sandbox/faults" and method == "POST":
            body = self._json(raw)
            fault = _Fault(
                count=_int(body.get("count", 1), "count", 0),
                status=_int(body["status"], "status", 400) if "status" in body else None,
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
                stats = {"requests": list(state.requests), "accepted": len(state.messages)}
            return self._send(200, stats)
        if path == "/_sandbox/reset" and method == "POST":
            state.reset()
            return self._send(200, {"reset": True})
        raise _Refusal(404, "not_found", f"No such path: {method} /{state.name}{path}")

    def _post_message(self, state: ProviderState, raw: bytes) -> None:
        key = self.headers.get("Idempotency-Key") or ""
        if not key or len(key) > _MAX_KEY:
            raise _Refusal(400, "idempotency_key_required", "Send an Idempotency-Key header.")
        fingerprint = hashlib.sha256(raw).hexdigest()
        with state.lock:
            fault = state.fault
            failing = fault.count > 0 and fault.status is not None
            delaying = fault.count > 0 and fault.status is None and fault.delay > 0
            if fault.count > 0:
                fault.count -= 1
            if failing:
                state.requests.append(
                    {"idempotency_key": key, "status": fault.status, "replayed": False, "fault": 1}
                )
        if failing:
            return self._send(
                fault.status, {"error": {"code": "sandbox_fault", "message": "Injected."}}
            )
        body = self._json(raw)
        with state.lock:
            stored = state.answers.get(key)
            if stored is not None and stored.fingerprint != fingerprint:
                status, answer, replayed = 409, None, False
            elif stored is not None:
                status, answer, replayed = stored.status, stored.body, True
            else:
                try:
                    status, answer = state.accept(body)
                except _Refusal as refusal:
                    status, answer = refusal.status, refusal.body
                state.answers[key] = _Stored(fingerprint, status, answer)
                replayed = False
            state.requests.append(
                {"idempotency_key": key, "status": status, "replayed": replayed, "fault": 0}
            )
        if delaying:
            time.sleep(fault.delay)
        if answer is None:
            return self._send(
                409,
                {
                    "error": {
                        "code": "idempotency_key_reused",
                        "message": "This key was used with another request.",
                    }
                },
            )
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return self._send(status, answer, headers)


def _int(value, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _Refusal(400, "invalid_request", f"{name} must be an integer >= {minimum}.")
    return value


def main(argv: list[str] | None = None) -> int:
    from shared import config, logs

    logs.configure("notifications-sandbox")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per command
    parser = argparse.ArgumentParser(description="Notification providers sandbox.")
    parser.add_argument("--host", default=os.environ.get("NOTIFICATIONS_SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument(
        "--smtp-port", type=int, default=int(os.environ.get("SMTP_PORT") or DEFAULT_SMTP_PORT)
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("NOTIFICATIONS_SANDBOX_PORT") or DEFAULT_HTTP_PORT),
    )
    parser.add_argument(
        "--mail-dir",
        default=os.environ.get("NOTIFICATIONS_SANDBOX_MAIL_DIR") or str(config.data_dir() / "mail"),
    )
    args = parser.parse_args(argv)
    sms_key = os.environ.get("NOTIFICATIONS_SMS_API_KEY") or DEFAULT_SMS_API_KEY
    push_key = os.environ.get("NOTIFICATIONS_PUSH_API_KEY") or DEFAULT_PUSH_API_KEY
    dev_keys = sms_key == DEFAULT_SMS_API_KEY or push_key == DEFAULT_PUSH_API_KEY
    if dev_keys and config.is_production():
        # The development keys are in this file: anyone could use them.
        print(
            "ENVIRONMENT=production: set NOTIFICATIONS_SMS_API_KEY and NOTIFICATIONS_PUSH_API_KEY",
            file=sys.stderr,
        )
        return 2
    store = MailStore(Path(args.mail_dir))
    smtp = start_smtp(store, args.host, args.smtp_port)
    server = SandboxHttpServer((args.host, args.http_port), store, sms_key, push_key)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info(
        "notifications sandbox listening",
        extra={
            "smtp": f"{args.host}:{args.smtp_port}",
            "url": server.url,
            "mail_dir": str(store.path),
        },
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        smtp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

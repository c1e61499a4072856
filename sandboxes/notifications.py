"""Notification providers sandbox: a real SMTP server and SMS and push HTTP APIs.

    python -m sandboxes.notifications --host 127.0.0.1 \\
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
    GET  /<provider>/_sandbox/stats            {requests: [{method, path, idempotency_key,
                                                 status, replayed, fault}], accepted: n}
    POST /<provider>/_sandbox/reset

Idempotency and faults as the payments sandbox (sandboxes/toolkit.py): the
first answer to a key is kept; the same key and body get it again (header
`Idempotent-Replayed: true`), another body is 409 idempotency_key_reused.
State other than the Maildir lives in memory.
"""

import argparse
import email
import email.policy
import logging
import mailbox
import os
import re
import secrets
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from sandboxes.toolkit import (
    Fault,
    Faults,
    JsonHandler,
    JsonServer,
    Provider,
    Refusal,
    check_int,
    json_object,
    refused_in_production,
    serve,
)

log = logging.getLogger("notifications.sandbox")

DEFAULT_SMTP_PORT = 8025
DEFAULT_HTTP_PORT = 8110
DEFAULT_SMS_API_KEY = "sms_sandbox_dev"
DEFAULT_PUSH_API_KEY = "push_sandbox_dev"
REJECTED_DOMAIN = "reject.test"

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


# -- SMTP ------------------------------------------------------------------------


class MailStore:
    """The Maildir every accepted message goes to, and the SMTP faults
    (Fault.status is the SMTP reply code)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(str(self.path), create=True)
        for sub in ("tmp", "new", "cur"):  # a directory made by someone else
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.faults = Faults()

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
        self.faults.set(Fault())
        with self._lock:
            self._maildir.clear()


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

        fault = self.store.faults.take()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            code = fault.status
            kind = "Try again later" if code < 500 else "Refused"
            return f"{code} {'4' if code < 500 else '5'}.3.0 {kind} (sandbox fault)"
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


class MessagingProvider(Provider):
    """An SMS or push API: the messages it accepted."""

    def __init__(self, name: str, api_key: str):
        super().__init__()
        self.name = name  # also the id prefix: sms_..., push_...
        self.api_key = api_key
        self.messages: list[dict] = []

    def forget(self) -> None:
        self.messages.clear()

    def stats(self) -> dict:
        return {**super().stats(), "accepted": len(self.messages)}

    def accept(self, body: dict) -> tuple[int, dict]:
        """The answer to POST /v1/messages (called under the lock, once per key)."""
        try:
            record = self._sms(body) if self.name == "sms" else self._push(body)
        except Refusal as refusal:  # kept as the answer to its key, like a 422
            return refusal.status, refusal.body
        message = {
            "id": f"{self.name}_{secrets.token_hex(10)}",
            "status": "delivered",
            **record,
            "created": datetime.now(UTC).isoformat(),
        }
        self.messages.append(message)
        return 201, message

    @staticmethod
    def _sms(body: dict) -> dict:
        to, text = body.get("to"), body.get("text")
        if not isinstance(text, str) or not text or len(text) > 1600:
            raise Refusal(400, "invalid_text", "text must be 1 to 1600 characters.")
        if not isinstance(to, str) or not _E164.match(to):
            raise Refusal(422, "invalid_number", "Not E.164.")
        if to.endswith("0000"):
            raise Refusal(422, "number_unreachable", "Unreachable.")
        return {"to": to, "text": text}

    @staticmethod
    def _push(body: dict) -> dict:
        token, title, text = body.get("token"), body.get("title"), body.get("text")
        if not isinstance(token, str) or not token.strip():
            raise Refusal(400, "invalid_token", "token must not be empty.")
        if not isinstance(text, str) or not text:
            raise Refusal(400, "invalid_text", "text must not be empty.")
        if token.startswith("unregistered"):
            raise Refusal(422, "token_unregistered", "Unknown device.")
        return {"token": token, "title": title or "", "text": text}


class SandboxHttpServer(JsonServer):
    def __init__(self, address, store: MailStore, sms_api_key: str, push_api_key: str):
        super().__init__(address, SandboxHandler)
        self.store = store
        self.providers = {
            "sms": MessagingProvider("sms", sms_api_key),
            "push": MessagingProvider("push", push_api_key),
        }


class SandboxHandler(JsonHandler):
    server: SandboxHttpServer
    log = log

    def provider_at(self, path: str) -> MessagingProvider | None:
        first, _, rest = path.lstrip("/").partition("/")
        return self.server.providers.get(first) if rest.startswith("v1/") else None

    def route(self, method: str, path: str, raw: bytes) -> None:
        first, _, rest = path.lstrip("/").partition("/")
        if first == "mail":
            return self._mail(method, "/" + rest, raw)
        if first in self.server.providers:
            return self._provider(self.server.providers[first], method, path, "/" + rest, raw)
        raise Refusal(404, "not_found", f"No such path: {path}")

    def _mail(self, method: str, path: str, raw: bytes) -> None:
        store = self.server.store
        if path == "/messages" and method == "GET":
            return self.send_json(200, {"items": store.messages()})
        if path == "/_sandbox/faults" and method == "POST":
            body = json_object(raw)
            fault = Fault(
                count=check_int(body.get("count", 1), "count", 0),
                status=check_int(body.get("code", 451), "code", 400),
                delay=float(body.get("delay") or 0),
            )
            if fault.status >= 600:
                raise Refusal(400, "invalid_request", "code must be a 4xx or 5xx SMTP reply.")
            store.faults.set(fault)
            return self.send_json(200, {"count": fault.count, "code": fault.status})
        if path == "/_sandbox/faults" and method == "DELETE":
            store.faults.set(Fault())
            return self.send_json(200, {"count": 0})
        if path == "/_sandbox/reset" and method == "POST":
            store.reset()
            return self.send_json(200, {"reset": True})
        raise Refusal(404, "not_found", f"No such mail path: {method} {path}")

    def _provider(
        self, provider: MessagingProvider, method: str, full_path: str, path: str, raw: bytes
    ) -> None:
        self.authenticate(provider.api_key)
        if path == "/v1/messages" and method == "POST":
            return self.post_once(provider, full_path, raw, provider.accept)
        if path == "/v1/messages" and method == "GET":
            with provider.lock:
                return self.send_json(200, {"items": list(provider.messages)})
        if self.controls(provider, method, path, raw):
            return None
        raise Refusal(404, "not_found", f"No such path: {method} {full_path}")


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
    if refused_in_production(dev_keys, "NOTIFICATIONS_SMS_API_KEY and NOTIFICATIONS_PUSH_API_KEY"):
        return 2
    store = MailStore(Path(args.mail_dir))
    smtp = start_smtp(store, args.host, args.smtp_port)
    server = SandboxHttpServer((args.host, args.http_port), store, sms_key, push_key)
    log.info(
        "notifications sandbox listening",
        extra={
            "smtp": f"{args.host}:{args.smtp_port}",
            "url": server.url,
            "mail_dir": str(store.path),
        },
    )
    return serve(server, smtp.stop)


if __name__ == "__main__":
    sys.exit(main())

"""The channels' providers: email over SMTP (smtplib), SMS and push over HTTP.

A send ends in one of three ways:

- it returns the provider's reference: the message was accepted;
- ProviderRejected: the provider answered and refused this message for
  good (an address or number it will never deliver to, a 5xx SMTP reply,
  a 4xx HTTP answer); sending it again would not help;
- ProviderUnavailable: no acceptance (unreachable, timed out, a 4xx SMTP
  reply, HTTP 5xx or 429, circuit open). The caller tries again later.

Each provider retries a failed try with tenacity (exponential backoff with
full jitter, within `max_attempts` and a 30 s deadline) and has its own
circuit breaker: after `breaker_failures` consecutive failed tries it
opens, and sends fail at once with ProviderUnavailable ("circuit_open")
for `breaker_reset_timeout` seconds; then one trial call decides. As in
payments, both are shared.providers.Guard; SMS and push also share its
HTTP handling (shared.providers.JsonApi).

SMS and push requests carry `Idempotency-Key: <notification id>`, so a try
that timed out after the provider accepted it is not delivered twice. SMTP
has no such thing; each email carries `Message-ID: <notification id@domain>`
(mail clients hide duplicates by it).
"""

import json
import queue
import smtplib
import ssl
import time
from collections.abc import Callable
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import formatdate

import requests

from services.notifications import domain
from services.notifications.settings import RETRY_DEADLINE, NotificationSettings
from shared import correlation
from shared.provider_errors import ProviderError, ProviderRejected, ProviderUnavailable
from shared.provider_errors import Transient as _Transient
from shared.providers import Guard, JsonApi, answer_body, refusal


class GuardedProvider:
    """One provider's tries, retried with backoff behind its circuit breaker."""

    def __init__(self, name: str, *, retry_deadline: float = RETRY_DEADLINE, **guard):
        self.name = name
        self._guard = Guard(f"notifications-{name}", retry_deadline=retry_deadline, **guard)

    @property
    def breaker_state(self) -> str:
        return self._guard.state

    def _with_retries(self, attempt: Callable[[], str], key: str) -> str:
        return self._guard.call(attempt, provider=self.name, notification_id=key)


class SmtpEmailProvider(GuardedProvider):
    """Email through an SMTP server, over sessions kept open between messages.

    Opening a session (connect, EHLO, STARTTLS, AUTH) costs more than the
    message it carries, so a few are kept, each used by one worker at a
    time. One idle longer than servers usually wait is closed rather than
    reused; one the server has dropped meanwhile is replaced and the message
    sent on a new session in the same try.
    """

    # Servers close idle clients after a few minutes (RFC 5321 asks for 5).
    IDLE_SECONDS = 60.0

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        sender_domain: str = "localhost",
        timeout: float = 10.0,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        sessions: int = 4,
        **guard,
    ):
        super().__init__("smtp", **guard)
        self._host = host
        self._port = port
        self._sender = sender
        self._sender_domain = sender_domain
        self._timeout = timeout
        self._username = username
        self._password = password
        self._starttls = starttls
        self._idle: queue.LifoQueue[tuple[smtplib.SMTP, float]] = queue.LifoQueue(sessions)

    def close(self) -> None:
        while True:
            try:
                session, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            _quit(session)

    def message(self, notification_id: str, to: str, subject: str, body: str) -> Message:
        # compat32 headers: the modern policy parses every header it is given,
        # which cost more than the whole SMTP conversation.
        message = MIMEText(body, "plain", "us-ascii" if body.isascii() else _UTF8_QP)
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = f"<{notification_id}@{self._sender_domain}>"
        message["X-Notification-ID"] = notification_id
        cid = correlation.current()
        if cid:
            message["X-Correlation-ID"] = cid
        return message

    def send(self, notification_id: str, to: str, subject: str, body: str) -> str:
        message = self.message(notification_id, to, subject, body)
        self._with_retries(lambda: self._attempt(message, to), notification_id)
        return message["Message-ID"]

    def _session(self) -> tuple[smtplib.SMTP, bool]:
        """An open session, and whether it was kept from an earlier message."""
        while True:
            try:
                session, since = self._idle.get_nowait()
            except queue.Empty:
                break
            if time.monotonic() - since < self.IDLE_SECONDS:
                return session, True
            _quit(session)
        session = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        try:
            if self._starttls:
                session.starttls(context=ssl.create_default_context())
            if self._username is not None:
                session.login(self._username, self._password or "")
        except BaseException:
            _quit(session)
            raise
        return session, False

    def _give_back(self, session: smtplib.SMTP) -> None:
        try:
            self._idle.put_nowait((session, time.monotonic()))
        except queue.Full:
            _quit(session)

    def _attempt(self, message: Message, to: str) -> str:
        try:
            refused = self._sendmail(to, message.as_bytes())
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _smtp_reply_error("recipient_refused", code, reply) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
            raise _smtp_reply_error("smtp_refused", exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, disconnected
            raise _Transient("smtp_unreachable", f"{type(exc).__name__}: {exc}") from exc
        if refused:  # several recipients and some refused: we send to one, so not here
            raise ProviderRejected("recipient_refused", str(refused))
        return message["Message-ID"]

    def _sendmail(self, to: str, data: bytes) -> dict:
        """One message on a session; a session that saw an error is not kept."""
        session, kept = self._session()
        try:
            refused = session.sendmail(self._sender, [to], data)
        except smtplib.SMTPServerDisconnected:
            session.close()
            if not kept:
                raise
            # The server dropped idle sessions: once more, on a new one.
            self.close()
            session, _ = self._session()
            try:
                refused = session.sendmail(self._sender, [to], data)
            except BaseException:
                _quit(session)
                raise
        except BaseException:
            _quit(session)
            raise
        self._give_back(session)
        return refused


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable in the raw message, unlike base64


def _quit(session: smtplib.SMTP) -> None:
    try:
        session.quit()
    except (smtplib.SMTPException, OSError):
        session.close()


def _smtp_reply_error(code: str, smtp_code: int, reply) -> ProviderError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    detail = f"SMTP {smtp_code} {text}"[:200]
    if 400 <= smtp_code < 500:
        return _Transient("smtp_try_later", detail)
    if 500 <= smtp_code < 600:
        return ProviderRejected(code, detail)
    return _Transient("smtp_unexpected_reply", detail)


class HttpMessageProvider(GuardedProvider):
    """A JSON HTTP messaging API (the sandbox's): POST <base>/v1/messages.

    SMS:  {"to": "+4915112345678", "text": "..."}
    push: {"token": "...", "title": "...", "text": "..."}
    201/200 {"id": ..., "status": ...} accepted; 4xx (but 408, 409
    idempotency_key_in_use, 429) refused for good; 5xx, 408, 429 and
    connection errors retried.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        timeout: tuple[float, float] = (3.05, 10.0),
        *,
        pool_size: int = 10,
        **guard,
    ):
        super().__init__(name, **guard)
        self._api = JsonApi(name, base_url, api_key, timeout, pool_size)

    def close(self) -> None:
        self._api.close()

    def send_message(self, notification_id: str, body: dict) -> str:
        # The same bytes on every try: providers compare bodies per key.
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        headers = self._api.headers(notification_id)
        return self._with_retries(
            lambda: self._result(self._api.request("POST", "/v1/messages", headers, data=data)),
            notification_id,
        )

    def _result(self, response: requests.Response) -> str:
        status = response.status_code
        body = answer_body(response, self.name) or {}
        if 200 <= status < 300:
            reference = body.get("id")
            if not reference:
                raise ProviderUnavailable("provider_bad_response", f"{self.name}: no id")
            return str(reference)
        raise refusal(status, body, self.name)


class SmsProvider(HttpMessageProvider):
    def send(self, notification_id: str, to: str, text: str) -> str:
        return self.send_message(notification_id, {"to": to, "text": text})


class PushProvider(HttpMessageProvider):
    def send(self, notification_id: str, token: str, title: str, text: str) -> str:
        return self.send_message(notification_id, {"token": token, "title": title, "text": text})


class Channels:
    """One provider per channel; `send` delivers one notification row's content."""

    def __init__(self, email: SmtpEmailProvider, sms: SmsProvider, push: PushProvider):
        self.email = email
        self.sms = sms
        self.push = push

    @classmethod
    def from_settings(cls, settings: NotificationSettings, pool_size: int = 10) -> "Channels":
        guard = {
            "max_attempts": settings.max_attempts,
            "backoff": settings.backoff,
            "breaker_failures": settings.breaker_failures,
            "breaker_reset_timeout": settings.breaker_reset_timeout,
        }
        timeout = (settings.connect_timeout, settings.read_timeout)
        return cls(
            SmtpEmailProvider(
                settings.smtp_host,
                settings.smtp_port,
                settings.sender,
                sender_domain=settings.sender_domain,
                timeout=settings.smtp_timeout,
                username=settings.smtp_username,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
                sessions=pool_size,
                **guard,
            ),
            SmsProvider(
                "sms", settings.sms_url, settings.sms_api_key, timeout, pool_size=pool_size, **guard
            ),
            PushProvider(
                "push",
                settings.push_url,
                settings.push_api_key,
                timeout,
                pool_size=pool_size,
                **guard,
            ),
        )

    def close(self) -> None:
        for provider in (self.email, self.sms, self.push):
            provider.close()

    def send(
        self, channel: str, notification_id: str, recipient: str, subject: str | None, body: str
    ) -> str:
        """The provider's reference for the accepted message."""
        if channel == domain.EMAIL:
            return self.email.send(notification_id, recipient, subject or "", body)
        if channel == domain.SMS:
            return self.sms.send(notification_id, recipient, body)
        if channel == domain.PUSH:
            return self.push.send(notification_id, recipient, subject or "", body)
        raise ValueError(f"unknown channel {channel!r}")

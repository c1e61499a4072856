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
pybreaker circuit breaker: after `breaker_failures` consecutive failed
tries it opens, and sends fail at once with ProviderUnavailable
("circuit_open") for `breaker_reset_timeout` seconds; then one trial call
decides. As in payments, the breaker is entered through `calling()`, which
holds its lock only to check and record the state (`call()` would hold it
for the whole request and serialise every eventlet worker).

SMS and push requests carry `Idempotency-Key: <notification id>`, so a try
that timed out after the provider accepted it is not delivered twice. SMTP
has no such thing; each email carries `Message-ID: <notification id@domain>`
(mail clients hide duplicates by it).
"""

import json
import logging
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
import tenacity
from requests.adapters import HTTPAdapter

from services.notifications import domain
from services.notifications.settings import RETRY_DEADLINE, NotificationSettings
from shared import correlation
from shared.circuit import ProviderCircuit
from shared.provider_errors import ProviderError, ProviderRejected, ProviderUnavailable
from shared.provider_errors import Transient as _Transient

log = logging.getLogger(__name__)


class GuardedProvider:
    """Retries with backoff and a circuit breaker around one provider's tries."""

    def __init__(
        self,
        name: str,
        *,
        max_attempts: int = 3,
        backoff: float = 0.25,
        backoff_max: float = 4.0,
        retry_deadline: float = RETRY_DEADLINE,
        breaker_failures: int = 5,
        breaker_reset_timeout: float = 30.0,
    ):
        self.name = name
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._retry_deadline = retry_deadline
        self._circuit = ProviderCircuit(
            f"notifications-{name}", breaker_failures, breaker_reset_timeout
        )

    @property
    def breaker_state(self) -> str:
        return self._circuit.state

    def _with_retries(self, attempt: Callable[[], str], key: str) -> str:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=(
                tenacity.stop_after_attempt(self._max_attempts)
                | tenacity.stop_after_delay(self._retry_deadline)
            ),
            wait=tenacity.wait_random_exponential(multiplier=self._backoff, max=self._backoff_max),
            before_sleep=self._log_retry(key),
            reraise=True,
        )
        return retrying(self._guarded_attempt, attempt)

    def _guarded_attempt(self, attempt: Callable[[], str]) -> str:
        with self._circuit.guarded():
            return attempt()

    def _log_retry(self, key: str):
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "notification provider failed; retrying",
                extra={
                    "provider": self.name,
                    "notification_id": key,
                    "attempt": state.attempt_number,
                    "error": getattr(error, "code", type(error).__name__),
                    "retry_in_s": round(state.upcoming_sleep, 3),
                },
            )

        return before_sleep


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
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._api_key = api_key
        self._timeout = timeout
        self._session = requests.Session()
        # Retries are tenacity's job, not urllib3's.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def send_message(self, notification_id: str, body: dict) -> str:
        # The same bytes on every try: providers compare bodies per key.
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": notification_id,
            correlation.HEADER: correlation.current() or correlation.new_id(),
        }
        return self._with_retries(lambda: self._attempt(data, headers), notification_id)

    def _attempt(self, data: str, headers: dict) -> str:
        try:
            response = self._session.post(
                self._url, data=data, headers=headers, timeout=self._timeout
            )
        except requests.Timeout as exc:
            raise _Transient("provider_timeout", f"{self.name}: {exc}") from exc
        except requests.RequestException as exc:  # refused, reset, DNS, TLS
            raise _Transient("provider_unreachable", f"{self.name}: {exc}") from exc
        return self._result(response)

    def _result(self, response: requests.Response) -> str:
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise _Transient("provider_error", f"{self.name}: HTTP {status}")
        if status in (401, 403):
            # Our credentials: nothing is sent until an operator fixes them;
            # keep the message for then instead of failing it for good.
            raise ProviderUnavailable("provider_auth_failed", f"{self.name}: HTTP {status}")
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        if 200 <= status < 300:
            reference = body.get("id")
            if not reference:
                raise ProviderUnavailable("provider_bad_response", f"{self.name}: no id")
            return str(reference)
        code = (body.get("error") or {}).get("code") or f"http_{status}"
        if status == 409 and code == "idempotency_key_in_use":
            raise _Transient(code, f"{self.name}: HTTP {status}")
        message = (body.get("error") or {}).get("message") or ""
        raise ProviderRejected(code, f"{self.name}: HTTP {status} {message}".strip()[:200])


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

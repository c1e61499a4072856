"""The notification providers against the real sandbox process: SMTP, SMS, push.

The sandbox runs as `python -m services.notifications.sandbox` on free ports;
`running_sandbox` and `NotificationsSandbox` are also used by
test_notifications_service.py.
"""

import mailbox
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from services.notifications.providers import (
    ProviderRejected,
    ProviderUnavailable,
    PushProvider,
    SmsProvider,
    SmtpEmailProvider,
)
from services.notifications.sandbox import parse_mail

ROOT = Path(__file__).resolve().parents[2]
SMS_KEY = "sms_sandbox_test"
PUSH_KEY = "push_sandbox_test"
SENDER = "Fintech Test <no-reply@fintech.test>"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotificationsSandbox:
    """Controls and reads one running sandbox."""

    def __init__(self, url: str, smtp_port: int, mail_dir: Path, log_path: Path):
        self.url = url
        self.smtp_port = smtp_port
        self.mail_dir = mail_dir
        self.log_path = log_path
        self.sms_url = f"{url}/sms"
        self.push_url = f"{url}/push"
        self._keys = {"sms": SMS_KEY, "push": PUSH_KEY, "mail": None}

    def _call(self, method: str, provider: str, path: str, body: dict | None = None) -> dict:
        key = self._keys[provider]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = requests.request(
            method, f"{self.url}/{provider}{path}", json=body, headers=headers, timeout=10
        )
        response.raise_for_status()
        return response.json()

    # what was received
    def mails(self, to: str | None = None) -> list[dict]:
        """Messages in the Maildir, read straight from disk (oldest first)."""
        box = mailbox.Maildir(str(self.mail_dir), create=False)
        items = sorted(
            (parse_mail(box.get_bytes(key)) for key in box.iterkeys()),
            key=lambda item: item["received_at"],
        )
        return [item for item in items if to is None or to in item["rcpt_to"]]

    def mails_over_http(self) -> list[dict]:
        return self._call("GET", "mail", "/messages")["items"]

    def messages(self, provider: str) -> list[dict]:
        return self._call("GET", provider, "/v1/messages")["items"]

    def requests_with_key(self, provider: str, key: str) -> list[dict]:
        stats = self._call("GET", provider, "/_sandbox/stats")
        return [r for r in stats["requests"] if r["idempotency_key"] == key]

    def request_count(self, provider: str) -> int:
        return len(self._call("GET", provider, "/_sandbox/stats")["requests"])

    # faults
    def fail_next(self, provider: str, count: int, status: int = 503) -> None:
        self._call("POST", provider, "/_sandbox/faults", {"count": count, "status": status})

    def slow_next(self, provider: str, count: int, delay: float) -> None:
        self._call("POST", provider, "/_sandbox/faults", {"count": count, "delay": delay})

    def clear_faults(self, provider: str) -> None:
        self._call("DELETE", provider, "/_sandbox/faults")

    def fail_next_mail(self, count: int, code: int = 451) -> None:
        self._call("POST", "mail", "/_sandbox/faults", {"count": count, "code": code})

    def reset(self) -> None:
        for provider in ("mail", "sms", "push"):
            self._call("POST", provider, "/_sandbox/reset")

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_sandbox(smtp_port: int | None = None) -> Iterator[NotificationsSandbox]:
    smtp_port, http_port = smtp_port or free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="notify-sandbox-"))
    log_path = workdir / "sandbox.log"
    env = {
        **os.environ,
        "NOTIFICATIONS_SMS_API_KEY": SMS_KEY,
        "NOTIFICATIONS_PUSH_API_KEY": PUSH_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "services.notifications.sandbox",
        "--smtp-port",
        str(smtp_port),
        "--http-port",
        str(http_port),
        "--mail-dir",
        str(workdir / "mail"),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sandbox = NotificationsSandbox(
        f"http://127.0.0.1:{http_port}", smtp_port, workdir / "mail", log_path
    )
    try:
        _wait_until_up(sandbox, process)
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(sandbox: NotificationsSandbox, process: subprocess.Popen, timeout=15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited ({process.returncode}):\n{sandbox.log()}")
        try:
            if requests.get(sandbox.url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the sandbox did not answer within {timeout} s:\n{sandbox.log()}")


# -- the providers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(sandbox):
    sandbox.reset()


FAST = {"backoff": 0.01, "retry_deadline": 10.0}


def smtp(sandbox, port=None, **guard) -> SmtpEmailProvider:
    options = {"max_attempts": 3, **FAST, **guard}
    return SmtpEmailProvider(
        "127.0.0.1",
        port or sandbox.smtp_port,
        SENDER,
        sender_domain="fintech.test",
        timeout=2,
        **options,
    )


def sms(sandbox, **guard) -> SmsProvider:
    options = {"max_attempts": 3, **FAST, **guard}
    return SmsProvider("sms", sandbox.sms_url, SMS_KEY, (1.0, 2.0), **options)


def push(sandbox, **guard) -> PushProvider:
    options = {"max_attempts": 3, **FAST, **guard}
    return PushProvider("push", sandbox.push_url, PUSH_KEY, (1.0, 2.0), **options)


def nid() -> str:
    return str(uuid.uuid4())


def test_an_email_reaches_the_smtp_server_with_its_headers(sandbox):
    notification = nid()
    reference = smtp(sandbox).send(notification, "ada@example.com", "Hello Ada", "Body\nline two")
    assert reference == f"<{notification}@fintech.test>"
    [mail] = sandbox.mails()
    assert mail["rcpt_to"] == ["ada@example.com"]
    assert mail["to"] == "ada@example.com"
    assert mail["from"] == SENDER
    assert mail["subject"] == "Hello Ada"
    assert mail["text"].strip() == "Body\nline two"
    assert mail["message_id"] == reference
    assert mail["notification_id"] == notification
    assert sandbox.mails_over_http() == [mail]


def test_a_kept_smtp_session_the_server_dropped_is_replaced(sandbox):
    """Sessions are kept between messages; a server restart in between costs
    nothing but a new session."""
    port = free_port()
    with running_sandbox(smtp_port=port) as first:
        provider = smtp(first)
        provider.send(nid(), "ada@example.com", "One", "B")
        assert len(first.mails()) == 1
    with running_sandbox(smtp_port=port) as second:
        provider.send(nid(), "ada@example.com", "Two", "B")
        assert [mail["subject"] for mail in second.mails()] == ["Two"]
    assert provider.breaker_state == "closed"


def test_smtp_try_later_replies_are_retried_and_a_refusal_is_final(sandbox):
    provider = smtp(sandbox)
    sandbox.fail_next_mail(2, code=451)
    provider.send(nid(), "ada@example.com", "S", "B")
    assert len(sandbox.mails()) == 1
    sandbox.fail_next_mail(1, code=554)
    with pytest.raises(ProviderRejected):
        provider.send(nid(), "ada@example.com", "S", "B")
    with pytest.raises(ProviderRejected) as refused:
        provider.send(nid(), "nobody@reject.test", "S", "B")
    assert refused.value.code == "recipient_refused"
    assert len(sandbox.mails()) == 1
    assert provider.breaker_state == "closed"  # refusals are answers, not outages


def test_an_unreachable_smtp_server_is_unavailable(sandbox):
    provider = smtp(sandbox, port=free_port(), max_attempts=2)
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.send(nid(), "ada@example.com", "S", "B")
    assert unavailable.value.code == "smtp_unreachable"


def test_an_sms_failing_twice_then_accepted_is_sent_once(sandbox):
    notification = nid()
    sandbox.fail_next("sms", 2)
    reference = sms(sandbox).send(notification, "+4915112345678", "Hi")
    [message] = sandbox.messages("sms")
    assert message["id"] == reference
    assert (message["to"], message["text"]) == ("+4915112345678", "Hi")
    tries = sandbox.requests_with_key("sms", notification)
    assert [t["status"] for t in tries] == [503, 503, 201]


def test_a_try_that_timed_out_is_sent_again_with_its_key_and_delivered_once(sandbox):
    notification = nid()
    provider = SmsProvider("sms", sandbox.sms_url, SMS_KEY, (1.0, 0.5), max_attempts=3, **FAST)
    sandbox.slow_next("sms", 1, delay=1.5)  # carried out, but the answer comes too late
    provider.send(notification, "+4915112345678", "Hi")
    assert len(sandbox.messages("sms")) == 1
    tries = sandbox.requests_with_key("sms", notification)
    assert [t["replayed"] for t in tries] == [False, True]


def test_refused_messages_are_final_and_do_not_open_the_breaker(sandbox):
    provider = push(sandbox, breaker_failures=1)
    for _ in range(3):
        with pytest.raises(ProviderRejected) as refused:
            provider.send(nid(), "unregistered-device", "T", "B")
        assert refused.value.code == "token_unregistered"
    assert provider.breaker_state == "closed"
    with pytest.raises(ProviderRejected) as bad_number:
        sms(sandbox).send(nid(), "+4915100000000", "Hi")
    assert bad_number.value.code == "number_unreachable"
    assert push(sandbox).send(nid(), "device-1", "Title", "Text").startswith("push_")
    [message] = sandbox.messages("push")
    assert (message["token"], message["title"], message["text"]) == ("device-1", "Title", "Text")


def test_the_breaker_opens_fails_fast_then_lets_a_trial_through(sandbox):
    provider = sms(sandbox, max_attempts=1, breaker_failures=2, breaker_reset_timeout=0.5)
    sandbox.fail_next("sms", 100)
    codes = []
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as failed:
            provider.send(nid(), "+4915112345678", "Hi")
        codes.append(failed.value.code)
    # pybreaker reports the failure that trips it as the open circuit.
    assert codes == ["provider_error", "circuit_open"]
    assert provider.breaker_state == "open"
    before = sandbox.request_count("sms")
    assert before == 2
    with pytest.raises(ProviderUnavailable) as fast:
        provider.send(nid(), "+4915112345678", "Hi")
    assert fast.value.code == "circuit_open"
    assert sandbox.request_count("sms") == before  # the provider was not asked
    sandbox.reset()  # the provider is back
    time.sleep(0.6)
    provider.send(nid(), "+4915112345678", "Hi")  # the trial call succeeds
    assert provider.breaker_state == "closed"
    assert len(sandbox.messages("sms")) == 1


def test_wrong_credentials_are_unavailable_not_refused(sandbox):
    provider = SmsProvider("sms", sandbox.sms_url, "wrong", (1.0, 2.0), max_attempts=1, **FAST)
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.send(nid(), "+4915112345678", "Hi")
    assert unavailable.value.code == "provider_auth_failed"

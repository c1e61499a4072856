"""The notification providers against the real sandbox process: SMTP, SMS, push.

The sandbox runs as `python -m sandboxes.notifications` on free ports
(tests/integration/sandbox.py starts it).
"""

import time
import uuid

import pytest

from services.notifications.providers import (
    ProviderRejected,
    ProviderUnavailable,
    PushProvider,
    SmsProvider,
    SmtpEmailProvider,
)
from tests.integration.sandbox import (
    PUSH_KEY,
    SENDER,
    SMS_KEY,
    free_port,
    running_notifications_sandbox,
)

# -- the providers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    with running_notifications_sandbox() as running:
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
    with running_notifications_sandbox(smtp_port=port) as first:
        provider = smtp(first)
        provider.send(nid(), "ada@example.com", "One", "B")
        assert len(first.mails()) == 1
    with running_notifications_sandbox(smtp_port=port) as second:
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

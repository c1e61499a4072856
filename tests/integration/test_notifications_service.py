"""notifications on the real broker, PostgreSQL and provider sandbox (SMTP, SMS, push).

Events are published the way outbox relays publish them (confirmed, with the
correlation header) on the producers' exchanges; what the customers got is
read back from the sandbox's Maildir and its SMS and push APIs.
"""

import json
import os
import subprocess
import sys
import uuid

import eventlet
import pytest
from kombu import Connection, Queue

from services.notifications import domain
from services.notifications.service import NotificationsService
from shared import contracts
from shared.dlq import ATTEMPTS, EXCEPTION_TYPE, dead_letter_queue_name
from shared.errors import InvalidInput, NotFound
from shared.events import envelope
from tests.integration import helpers
from tests.integration.sandbox import (
    PUSH_KEY,
    ROOT,
    SENDER,
    SMS_KEY,
    running_notifications_sandbox,
)

PHONE = "+4915112345678"
PARKING = dead_letter_queue_name("notifications")
RETRIES = {
    # Three deliveries of an event (0.2 s, then 0.4 s apart) before it is parked.
    "NOTIFICATIONS_EVENT_RETRY_ATTEMPTS": 3,
    "NOTIFICATIONS_EVENT_RETRY_BACKOFF_SECONDS": 0.2,
}


@pytest.fixture(scope="module")
def sandbox():
    with running_notifications_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(sandbox):
    sandbox.reset()


@pytest.fixture
def notifications(container_factory, config, sandbox, monkeypatch):
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(sandbox.smtp_port))
    monkeypatch.setenv("NOTIFICATIONS_FROM", SENDER)
    monkeypatch.setenv("NOTIFICATIONS_SMS_URL", sandbox.sms_url)
    monkeypatch.setenv("NOTIFICATIONS_SMS_API_KEY", SMS_KEY)
    monkeypatch.setenv("NOTIFICATIONS_PUSH_URL", sandbox.push_url)
    monkeypatch.setenv("NOTIFICATIONS_PUSH_API_KEY", PUSH_KEY)
    monkeypatch.setenv("NOTIFICATIONS_PROVIDER_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("NOTIFICATIONS_PROVIDER_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("NOTIFICATIONS_PROVIDER_READ_TIMEOUT", "2")
    monkeypatch.setenv("NOTIFICATIONS_BREAKER_FAILURES", "100")
    container = container_factory(NotificationsService, {**config, **RETRIES})
    container.start()
    return container


@pytest.fixture
def broker(config):
    conn = Connection(config["AMQP_URI"], transport_options={"confirm_publish": True})
    yield conn
    conn.release()


@pytest.fixture
def publish(publish_event):
    """Publish an event as its source's outbox relay does; returns its envelope."""

    def send(source, event_type, payload=None, message=None):
        message = message or envelope(event_type, payload, correlation_id="it-notify")
        return publish_event(source, message)

    return send


def wait_for(predicate, timeout=15.0):
    return helpers.wait_for(predicate, timeout, interval=0.05)


def new_user(publish, sandbox, name="Ada Lovelace"):
    """A registered customer whose welcome email has arrived: (user_id, email)."""
    user_id = str(uuid.uuid4())
    address = f"{user_id[:8]}@example.com"
    publish(
        contracts.AUTH,
        contracts.USER_REGISTERED,
        {"user_id": user_id, "email": address, "full_name": name},
    )
    wait_for(lambda: sandbox.mails(address))
    return user_id, address


def rows(sql, event_id):
    return sql(
        "notifications",
        "SELECT user_id, channel, template, status, attempts, retryable, last_error "
        "FROM notifications WHERE event_id = :e ORDER BY user_id, channel",
        e=event_id,
    )


def transfer_event(kind, owner, to_owner=None, amount=1250, currency="EUR", reason=None):
    transfer_id = str(uuid.uuid4())
    return {
        "transfer_id": transfer_id,
        "kind": kind,
        "status": "failed" if reason else "completed",
        "reason": reason,
        "owner_id": owner,
        "to_owner_id": to_owner,
        "amount": amount,
        "currency": currency,
        "transfer": {"transfer_id": transfer_id, "kind": kind, "reference": "Dinner"},
    }


def parked(broker, event_id):
    """The parked copies of an event (left in the queue)."""
    channel = broker.channel()
    found = []
    try:
        queue = Queue(PARKING)(channel)
        while (message := queue.get(no_ack=False)) is not None:
            if json.loads(message.body)["event_id"] == event_id:
                found.append(message.headers)
    finally:
        channel.close()  # unacknowledged: back in the queue
    return found


# -- email --------------------------------------------------------------------------


def test_a_registration_sends_a_welcome_email_and_lists_it(notifications, publish, sandbox, rpc):
    user_id = str(uuid.uuid4())
    address = f"{user_id[:8]}@example.com"
    event = publish(
        contracts.AUTH,
        contracts.USER_REGISTERED,
        {"user_id": user_id, "email": address, "full_name": "Ada Lovelace"},
    )
    [mail] = wait_for(lambda: sandbox.mails(address))
    assert mail["to"] == address
    assert mail["from"] == SENDER
    assert mail["subject"] == "Welcome to Fintech, Ada Lovelace"
    assert mail["text"].startswith("Hi Ada Lovelace,")
    assert address in mail["text"]
    [item] = wait_for(
        lambda: [n for n in rpc.notifications.list_notifications(user_id) if n["status"] == "sent"]
    )
    assert item["channel"] == "email" and item["template"] == domain.Template.WELCOME
    assert mail["message_id"] == f"<{item['notification_id']}@fintech.test>"
    assert item["event_type"] == contracts.USER_REGISTERED
    detail = rpc.notifications.get_notification(item["notification_id"])
    assert detail["event_id"] == event["event_id"]
    assert detail["subject"] == mail["subject"]
    assert detail["provider_reference"] == mail["message_id"]


def test_transfer_sent_and_received_go_to_both_parties(notifications, publish, sandbox, rpc, sql):
    sender, sender_mail = new_user(publish, sandbox, "Ada")
    receiver, receiver_mail = new_user(publish, sandbox, "Grace")
    rpc.notifications.set_preferences(receiver, {"phone": PHONE})  # SMS too
    payload = transfer_event("internal", sender, receiver, amount=123456)
    event = publish(contracts.TRANSACTIONS, contracts.TRANSFER_COMPLETED, payload)
    wait_for(
        lambda: len(sandbox.mails(sender_mail)) == 2 and len(sandbox.mails(receiver_mail)) == 2
    )
    sent = sandbox.mails(sender_mail)[-1]
    received = sandbox.mails(receiver_mail)[-1]
    assert sent["subject"] == "You sent EUR 1,234.56"
    assert sent["text"].startswith("Hi Ada,") and "Dinner" in sent["text"]
    assert received["subject"] == "You received EUR 1,234.56"
    assert received["text"].startswith("Hi Grace,")
    [sms] = wait_for(lambda: sandbox.messages("sms"))
    assert sms["to"] == PHONE
    assert sms["text"] == "Fintech: you received EUR 1,234.56."
    wait_for(lambda: {r[3] for r in rows(sql, event["event_id"])} == {"sent"})
    by_party = {(r[0], r[1]): r[2] for r in rows(sql, event["event_id"])}
    assert by_party == {
        (sender, "email"): domain.Template.TRANSFER_SENT,
        (receiver, "email"): domain.Template.TRANSFER_RECEIVED,
        (receiver, "sms"): domain.Template.TRANSFER_RECEIVED,
    }


def test_every_kind_of_news_has_its_template(notifications, publish, sandbox, sql):
    user, address = new_user(publish, sandbox)
    events = [
        (
            contracts.TRANSACTIONS,
            contracts.TRANSFER_COMPLETED,
            transfer_event("deposit", user, user),
        ),
        (contracts.TRANSACTIONS, contracts.TRANSFER_COMPLETED, transfer_event("payout", user)),
        (
            contracts.TRANSACTIONS,
            contracts.TRANSFER_FAILED,
            transfer_event("internal", user, str(uuid.uuid4()), reason="insufficient_funds"),
        ),
        (
            contracts.AUTH,
            contracts.LOGIN_SUCCEEDED,
            {"user_id": user, "session_id": "s", "mfa": False},
        ),
        (contracts.AUTH, contracts.MFA_ENABLED, {"user_id": user}),
        (
            contracts.RISK,
            contracts.TRANSFER_REVIEW_REQUESTED,
            {
                "transfer_id": str(uuid.uuid4()),
                "owner_id": user,
                "amount": 990000,
                "currency": "EUR",
            },
        ),
    ]
    for source, event_type, payload in events:
        publish(source, event_type, payload)
    wait_for(lambda: len(sandbox.mails(address)) == 1 + len(events))
    subjects = {mail["subject"] for mail in sandbox.mails(address)}
    assert {
        "Deposit received: EUR 12.50",
        "Payout sent: EUR 12.50",
        "Your transfer of EUR 12.50 did not go through",
        "New sign-in to your Fintech account",
        "Two-factor authentication is on",
        "We are reviewing your transfer",
    } <= subjects
    templates = sql(
        "notifications", "SELECT template FROM notifications WHERE user_id = :u", u=user
    )
    assert sorted(t for (t,) in templates) == sorted(
        [
            domain.Template.WELCOME,
            domain.Template.DEPOSIT_RECEIVED,
            domain.Template.PAYOUT_SENT,
            domain.Template.TRANSFER_FAILED,
            domain.Template.NEW_LOGIN,
            domain.Template.MFA_ENABLED,
            domain.Template.RISK_REVIEW,
        ]
    )


# -- exactly once, retries, dead letters ----------------------------------------


def test_a_duplicated_event_sends_once(notifications, publish, sandbox, sql):
    user, address = new_user(publish, sandbox)
    message = envelope(contracts.MFA_ENABLED, {"user_id": user}, correlation_id="it-notify")
    for _ in range(3):
        publish(contracts.AUTH, contracts.MFA_ENABLED, message=message)
    wait_for(lambda: len(sandbox.mails(address)) == 2)
    eventlet.sleep(1.0)  # the copies have been handled too
    assert len(sandbox.mails(address)) == 2
    [(_, channel, template, status, attempts, _, _)] = rows(sql, message["event_id"])
    assert (channel, template, status, attempts) == (
        "email",
        domain.Template.MFA_ENABLED,
        "sent",
        1,
    )
    assert sql(
        "notifications",
        "SELECT count(*) FROM inbox WHERE event_id = :e",
        e=message["event_id"],
    ) == [(1,)]


def test_an_sms_provider_failing_a_few_times_then_succeeding_sends_once(
    notifications, publish, sandbox, rpc, sql, broker
):
    user, _ = new_user(publish, sandbox)
    rpc.notifications.set_preferences(user, {"phone": PHONE, "email": False})
    # Two tries per send: the first delivery fails twice, the retry once, then it goes.
    sandbox.fail_next("sms", 3)
    event = publish(contracts.AUTH, contracts.MFA_ENABLED, {"user_id": user})
    [sms] = wait_for(lambda: sandbox.messages("sms"))
    assert sms["to"] == PHONE
    wait_for(lambda: rows(sql, event["event_id"])[0][3] == "sent")
    [(_, channel, _, status, attempts, _, last_error)] = rows(sql, event["event_id"])
    assert (channel, status, attempts, last_error) == ("sms", "sent", 2, None)
    [notification] = [
        n for n in rpc.notifications.list_notifications(user) if n["template"] == "mfa_enabled"
    ]
    tries = sandbox.requests_with_key("sms", notification["notification_id"])
    assert [t["status"] for t in tries] == [503, 503, 503, 201]
    eventlet.sleep(0.5)
    assert len(sandbox.messages("sms")) == 1
    assert parked(broker, event["event_id"]) == []


def test_a_provider_down_too_long_parks_the_event_and_a_replay_sends_it(
    notifications, publish, sandbox, rpc, sql, broker, config
):
    user, address = new_user(publish, sandbox)
    rpc.notifications.set_preferences(user, {"phone": PHONE})
    sandbox.fail_next("sms", 1000)
    event = publish(contracts.AUTH, contracts.LOGIN_SUCCEEDED, {"user_id": user, "mfa": False})
    [headers] = wait_for(lambda: parked(broker, event["event_id"]))
    assert headers[ATTEMPTS] == 3
    assert headers[EXCEPTION_TYPE].endswith("DeliveryIncomplete")
    by_channel = {r[1]: r for r in rows(sql, event["event_id"])}
    # The email went out on the first delivery, once; the SMS is given up on.
    assert by_channel["email"][3] == "sent"
    assert len(sandbox.mails(address)) == 2
    _, _, _, status, attempts, retryable, last_error = by_channel["sms"]
    assert (status, attempts, retryable) == ("failed", 3, True)
    assert last_error.startswith("provider_error")
    assert sandbox.messages("sms") == []

    # The provider is back; an operator replays the parked event: the SMS goes,
    # the email is not sent again.
    sandbox.clear_faults("sms")
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.dlq",
            "replay",
            "notifications",
            "--event-id",
            event["event_id"],
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, AMQP_URI=config["AMQP_URI"]),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    [sms] = wait_for(lambda: sandbox.messages("sms"))
    assert sms["text"].startswith("New sign-in to your Fintech account")
    wait_for(lambda: {r[3] for r in rows(sql, event["event_id"])} == {"sent"})
    eventlet.sleep(0.5)
    assert [m["subject"] for m in sandbox.mails(address)] == [
        "Welcome to Fintech, Ada Lovelace",
        "New sign-in to your Fintech account",
    ]
    assert len(sandbox.messages("sms")) == 1
    assert parked(broker, event["event_id"]) == []


def test_a_refused_message_is_failed_without_parking_the_event(
    notifications, publish, sandbox, rpc, sql, broker
):
    user, _ = new_user(publish, sandbox)
    rpc.notifications.set_preferences(user, {"push_token": "unregistered-device"})
    event = publish(contracts.AUTH, contracts.MFA_ENABLED, {"user_id": user})
    wait_for(lambda: {r[3] for r in rows(sql, event["event_id"])} == {"sent", "failed"})
    by_channel = {r[1]: r for r in rows(sql, event["event_id"])}
    assert by_channel["email"][3] == "sent"
    _, _, _, status, attempts, retryable, last_error = by_channel["push"]
    assert (status, attempts, retryable) == ("failed", 1, False)
    assert last_error.startswith("token_unregistered")
    eventlet.sleep(1.0)
    assert parked(broker, event["event_id"]) == []


def test_an_event_about_a_customer_not_registered_yet_waits_for_the_registration(
    notifications, publish, sandbox
):
    user_id = str(uuid.uuid4())
    address = f"{user_id[:8]}@example.com"
    publish(contracts.AUTH, contracts.LOGIN_SUCCEEDED, {"user_id": user_id, "mfa": True})
    eventlet.sleep(0.1)  # the login is handled first, and retried
    publish(
        contracts.AUTH,
        contracts.USER_REGISTERED,
        {"user_id": user_id, "email": address, "full_name": "Ada"},
    )
    wait_for(lambda: len(sandbox.mails(address)) == 2)
    assert {m["subject"] for m in sandbox.mails(address)} == {
        "Welcome to Fintech, Ada",
        "New sign-in to your Fintech account",
    }


# -- preferences and the list over RPC -----------------------------------------------


def test_preferences_over_rpc(notifications, rpc):
    user = str(uuid.uuid4())
    assert rpc.notifications.get_preferences(user) == {
        "email": True,
        "sms": False,
        "push": False,
        "phone": None,
        "push_token": None,
    }
    with pytest.raises(InvalidInput) as no_phone:
        rpc.notifications.set_preferences(user, {"sms": True})
    assert no_phone.value.code == "phone_required"
    assert no_phone.value.errors == {"sms": ["SMS needs a phone number (phone)."]}
    with pytest.raises(InvalidInput):
        rpc.notifications.set_preferences(user, {"phone": "0151 123"})
    with pytest.raises(InvalidInput):
        rpc.notifications.set_preferences(user, {"push_token": ""})
    with pytest.raises(InvalidInput):
        rpc.notifications.set_preferences(user, {"fax": True})
    with pytest.raises(InvalidInput):
        rpc.notifications.set_preferences("not-a-uuid", {})
    assert rpc.notifications.set_preferences(user, {"phone": PHONE, "email": False}) == {
        "email": False,
        "sms": True,
        "push": False,
        "phone": PHONE,
        "push_token": None,
    }
    assert rpc.notifications.set_preferences(user, {"push_token": "device-1"})["push"] is True
    changed = rpc.notifications.set_preferences(user, {"sms": False, "phone": None})
    assert (changed["sms"], changed["phone"], changed["push_token"]) == (False, None, "device-1")
    assert rpc.notifications.get_preferences(user) == changed


def test_notifications_are_listed_per_user_newest_first(notifications, publish, sandbox, rpc):
    ada, ada_mail = new_user(publish, sandbox, "Ada")
    grace, _ = new_user(publish, sandbox, "Grace")
    for event_type in (contracts.MFA_ENABLED, contracts.LOGIN_SUCCEEDED):
        publish(contracts.AUTH, event_type, {"user_id": ada, "mfa": True})
        eventlet.sleep(0.05)
    wait_for(lambda: len(sandbox.mails(ada_mail)) == 3)
    listed = wait_for(
        lambda: (
            [n for n in rpc.notifications.list_notifications(ada) if n["status"] == "sent"]
            if len(rpc.notifications.list_notifications(ada)) == 3
            else None
        )
    )
    assert [n["template"] for n in listed] == [
        domain.Template.NEW_LOGIN,
        domain.Template.MFA_ENABLED,
        domain.Template.WELCOME,
    ]
    assert [n["template"] for n in rpc.notifications.list_notifications(ada, 2)] == [
        domain.Template.NEW_LOGIN,
        domain.Template.MFA_ENABLED,
    ]
    assert [n["template"] for n in rpc.notifications.list_notifications(grace)] == [
        domain.Template.WELCOME
    ]
    assert rpc.notifications.list_notifications(str(uuid.uuid4())) == []
    with pytest.raises(InvalidInput):
        rpc.notifications.list_notifications(ada, 0)
    with pytest.raises(NotFound):
        rpc.notifications.get_notification(str(uuid.uuid4()))
    assert rpc.notifications.health() == {"service": "notifications", "status": "ok"}

"""The notifications endpoints through the gateway app (Flask test client).

A real AuthService registers the customer and signs the access token; its
user_registered event goes through its outbox to the real
NotificationsService, whose welcome email reaches the sandbox SMTP server.
"""

import time
import uuid

import eventlet
import pytest

from gateway.app import create_app
from services.auth.service import AuthService
from services.notifications.service import NotificationsService
from tests.integration.sandbox import (
    PUSH_KEY,
    SENDER,
    SMS_KEY,
    running_notifications_sandbox,
)

PASSWORD = "correct horse battery staple"
PHONE = "+4915112345678"


@pytest.fixture(scope="module")
def sandbox():
    with running_notifications_sandbox() as running:
        yield running


@pytest.fixture
def services(container_factory, config, sandbox, monkeypatch):
    monkeypatch.setenv("SMTP_PORT", str(sandbox.smtp_port))
    monkeypatch.setenv("NOTIFICATIONS_FROM", SENDER)
    monkeypatch.setenv("NOTIFICATIONS_SMS_URL", sandbox.sms_url)
    monkeypatch.setenv("NOTIFICATIONS_SMS_API_KEY", SMS_KEY)
    monkeypatch.setenv("NOTIFICATIONS_PUSH_URL", sandbox.push_url)
    monkeypatch.setenv("NOTIFICATIONS_PUSH_API_KEY", PUSH_KEY)
    container_factory(AuthService, config).start()
    container_factory(NotificationsService, config).start()


@pytest.fixture
def client(integration_env, services):
    app = create_app(
        {
            "AMQP_URI": integration_env.amqp_uri,
            "RPC_TIMEOUT": 10,
            "RATELIMIT_STORAGE_URI": "memory://",
        }
    )
    yield app.test_client()
    app.extensions["fintech"].rpc.close()


@pytest.fixture
def customer(rpc, services):
    """(user_id, email, Authorization header) of a freshly registered customer."""
    address = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    user_id = rpc.auth.register(address, PASSWORD, "Ada Lovelace")["user_id"]
    tokens = rpc.auth.login(address, PASSWORD)
    return user_id, address, {"Authorization": f"Bearer {tokens['access_token']}"}


def eventually(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        eventlet.sleep(0.1)


def test_preferences_get_and_put_over_http(client, customer):
    _, _, auth = customer
    response = client.get("/v1/notifications/preferences", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"email": True, "sms": False, "push": False}

    response = client.put("/v1/notifications/preferences", json={"phone": PHONE}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"email": True, "sms": True, "push": False, "phone": PHONE}

    response = client.put(
        "/v1/notifications/preferences",
        json={"push_token": "device-1", "email": False},
        headers=auth,
    )
    assert response.get_json() == {
        "email": False,
        "sms": True,
        "push": True,
        "phone": PHONE,
        "push_token": "device-1",
    }
    assert client.get("/v1/notifications/preferences", headers=auth).get_json()["push"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"phone": "0151 1234"},  # not E.164 (the gateway's schema)
        {"push_token": ""},
        {"email": "yes"},
        {"fax": True},
    ],
)
def test_bad_preferences_are_422_problems(client, customer, body):
    _, _, auth = customer
    response = client.put("/v1/notifications/preferences", json=body, headers=auth)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


def test_sms_without_a_phone_is_422_from_the_service(client, customer):
    _, _, auth = customer
    response = client.put("/v1/notifications/preferences", json={"sms": True}, headers=auth)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "phone_required"
    response = client.put(
        "/v1/notifications/preferences", json={"phone": PHONE, "sms": True}, headers=auth
    )
    assert response.status_code == 200
    # Removing the phone while SMS is on is refused; with SMS off it is fine.
    response = client.put("/v1/notifications/preferences", json={"phone": None}, headers=auth)
    assert response.status_code == 422
    response = client.put(
        "/v1/notifications/preferences", json={"phone": None, "sms": False}, headers=auth
    )
    assert response.get_json() == {"email": True, "sms": False, "push": False}


def test_the_registration_and_login_emails_are_listed(client, customer, sandbox):
    _, address, auth = customer
    mails = eventually(lambda: len(sandbox.mails(address)) == 2 and sandbox.mails(address))
    by_subject = {mail["subject"]: mail for mail in mails}
    assert set(by_subject) == {
        "Welcome to Fintech, Ada Lovelace",
        "New sign-in to your Fintech account",
    }

    def sent():
        response = client.get("/v1/notifications", headers=auth)
        assert response.status_code == 200
        items = response.get_json()["items"]
        return items if len(items) == 2 and {i["status"] for i in items} == {"sent"} else None

    items = eventually(sent)
    assert items, "both notifications listed as sent"
    for item in items:
        assert set(item) == {"notification_id", "channel", "template", "status", "created_at"}
        assert item["channel"] == "email"
    welcome = next(item for item in items if item["template"] == "welcome")
    assert {item["template"] for item in items} == {"welcome", "new_login"}
    message_id = by_subject["Welcome to Fintech, Ada Lovelace"]["message_id"]
    assert message_id.startswith(f"<{welcome['notification_id']}@")
    assert len(client.get("/v1/notifications?limit=1", headers=auth).get_json()["items"]) == 1
    assert client.get("/v1/notifications?limit=0", headers=auth).status_code == 422


def test_the_endpoints_need_a_token(client):
    for method, path in (
        ("GET", "/v1/notifications"),
        ("GET", "/v1/notifications/preferences"),
        ("PUT", "/v1/notifications/preferences"),
    ):
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, path

"""Notifications over the real platform: an email a person would receive."""

import mailbox
import time

from tests.e2e.helpers import register


def _mail_to(api, address, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.mail_dir.exists():
            for message in mailbox.Maildir(api.mail_dir, create=False):
                if address in message["To"]:
                    return message
        time.sleep(0.2)
    return None


def test_registering_sends_a_welcome_email_that_is_listed(api):
    user = register(api)
    message = _mail_to(api, user["email"])
    assert message is not None, "no welcome email reached the SMTP server"
    assert "welcome" in message["Subject"].lower()
    login = api.post("/v1/auth/login", json={"email": user["email"], "password": user["password"]})
    token = login.json()["access_token"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = api.get("/v1/notifications", token=token).json()["items"]
        if any(i["template"] == "welcome" and i["status"] == "sent" for i in items):
            break
        time.sleep(0.2)
    assert any(i["template"] == "welcome" and i["status"] == "sent" for i in items), items
    prefs = api.get("/v1/notifications/preferences", token=token).json()
    assert prefs["email"] is True and prefs["sms"] is False

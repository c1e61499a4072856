"""Preference rules, channel choice, event planning, settings and the retry policy."""

import pytest

from services.notifications import domain
from services.notifications.domain import PreferenceError, Preferences, merge_preferences
from services.notifications.settings import NotificationSettings
from services.notifications.steps import Delivery, notification_policy
from shared import contracts
from shared.config import ConfigError
from shared.event_handlers import RetryPolicyError

PHONE = "+4915112345678"


def test_defaults_are_email_only():
    assert domain.DEFAULT_PREFERENCES.as_dict() == {
        "email": True,
        "sms": False,
        "push": False,
        "phone": None,
        "push_token": None,
    }


@pytest.mark.parametrize("phone", [PHONE, "+12", "+123456789012345"])
def test_e164_numbers_are_accepted(phone):
    assert merge_preferences(Preferences(), {"phone": phone}).phone == phone


@pytest.mark.parametrize(
    "phone", ["015112345678", "+0151123", "+1234567890123456", "+49 151 1234", "", "+", 4915112]
)
def test_other_numbers_are_refused(phone):
    with pytest.raises(PreferenceError) as refused:
        merge_preferences(Preferences(), {"phone": phone})
    assert (refused.value.code, refused.value.field) == ("invalid_phone", "phone")


def test_sms_without_a_phone_is_refused():
    with pytest.raises(PreferenceError) as refused:
        merge_preferences(Preferences(), {"sms": True})
    assert refused.value.code == "phone_required"
    assert refused.value.field == "sms"


def test_push_without_a_token_is_refused_and_an_empty_token_too():
    with pytest.raises(PreferenceError) as refused:
        merge_preferences(Preferences(), {"push": True})
    assert refused.value.code == "push_token_required"
    for token in ("", "   "):
        with pytest.raises(PreferenceError) as empty:
            merge_preferences(Preferences(), {"push_token": token})
        assert empty.value.code == "invalid_push_token"
    with pytest.raises(PreferenceError):
        merge_preferences(Preferences(), {"push_token": "x" * 5000})


def test_a_first_phone_or_token_switches_its_channel_on_unless_told_otherwise():
    assert merge_preferences(Preferences(), {"phone": PHONE}).sms is True
    assert merge_preferences(Preferences(), {"phone": PHONE, "sms": False}).sms is False
    assert merge_preferences(Preferences(), {"push_token": "dev-1"}).push is True
    assert merge_preferences(Preferences(), {"push_token": " dev-1 "}).push_token == "dev-1"
    # A new number for a customer who turned SMS off keeps it off.
    off = Preferences(phone=PHONE, sms=False)
    assert merge_preferences(off, {"phone": "+4915199999999"}).sms is False


def test_absent_keys_stay_and_null_clears():
    current = Preferences(email=False, sms=True, phone=PHONE)
    assert merge_preferences(current, {}) == current
    assert merge_preferences(current, {"push_token": "t"}).phone == PHONE
    with pytest.raises(PreferenceError) as refused:
        merge_preferences(current, {"phone": None})  # SMS would be left without a number
    assert refused.value.code == "phone_required"
    cleared = merge_preferences(current, {"phone": None, "sms": False})
    assert (cleared.phone, cleared.sms) == (None, False)


def test_bad_types_and_unknown_keys_are_refused():
    with pytest.raises(PreferenceError):
        merge_preferences(Preferences(), {"email": "yes"})
    with pytest.raises(PreferenceError) as unknown:
        merge_preferences(Preferences(), {"fax": True})
    assert unknown.value.field == "fax"


def test_channels_follow_preferences_and_addresses():
    everything = Preferences(sms=True, push=True, phone=PHONE, push_token="tok")
    assert domain.channels(domain.Recipient(everything, "a@example.com")) == {
        "email": "a@example.com",
        "sms": PHONE,
        "push": "tok",
    }
    assert domain.channels(domain.Recipient(Preferences(), None)) == {"email": None}
    assert domain.channels(domain.Recipient(Preferences(email=False), "a@example.com")) == {}


def test_a_transfer_to_oneself_is_told_once():
    me = "11111111-1111-1111-1111-111111111111"
    payload = {
        "kind": "internal",
        "owner_id": me,
        "to_owner_id": me,
        "amount": 5,
        "currency": "EUR",
    }
    planned = domain.plan(contracts.TRANSFER_COMPLETED, payload)
    assert [(p.user_id, p.template) for p in planned] == [(me, domain.Template.TRANSFER_SENT)]


def test_events_of_no_concern_plan_nothing_and_bad_ones_are_malformed():
    assert domain.plan(contracts.LOGIN_FAILED, {"user_id": "u"}) == []
    with pytest.raises(domain.MalformedEvent):
        domain.plan(contracts.USER_REGISTERED, {"user_id": None})
    with pytest.raises(domain.MalformedEvent):
        domain.plan(
            contracts.TRANSFER_COMPLETED, {"kind": "deposit", "owner_id": "u", "amount": "5"}
        )
    with pytest.raises(domain.MalformedEvent):
        domain.plan(
            contracts.TRANSFER_COMPLETED,
            {"kind": "teleport", "owner_id": "u", "amount": 5, "currency": "EUR"},
        )


def test_settings_defaults_and_errors(monkeypatch):
    for name in (
        "SMTP_PORT",
        "NOTIFICATIONS_FROM",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "ENVIRONMENT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = NotificationSettings.from_env()
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 8025)
    assert settings.sender_domain == "fintech.local"
    assert settings.lease_seconds > 30
    monkeypatch.setenv("NOTIFICATIONS_FROM", "not an address")
    with pytest.raises(ConfigError, match="NOTIFICATIONS_FROM"):
        NotificationSettings.from_env()
    monkeypatch.setenv("NOTIFICATIONS_FROM", "Bank <bank@example.com>")
    monkeypatch.setenv("SMTP_USERNAME", "u")
    with pytest.raises(ConfigError, match="SMTP_PASSWORD"):
        NotificationSettings.from_env()
    monkeypatch.delenv("SMTP_USERNAME")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("NOTIFICATIONS_SMS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOTIFICATIONS_SMS_API_KEY"):
        NotificationSettings.from_env()


def test_the_retry_policy_prefers_its_own_keys_then_the_platforms_then_defaults():
    assert notification_policy({}, {}) == (10, 1.0, 300.0)
    assert notification_policy({"EVENT_RETRY_ATTEMPTS": 4}, {}) == (4, 1.0, 300.0)
    assert notification_policy(
        {"EVENT_RETRY_ATTEMPTS": 4, "NOTIFICATIONS_EVENT_RETRY_ATTEMPTS": "3"},
        {"NOTIFICATIONS_EVENT_RETRY_BACKOFF_SECONDS": "0.1"},
    ) == (3, 0.1, 300.0)
    with pytest.raises(RetryPolicyError):
        notification_policy({"NOTIFICATIONS_EVENT_RETRY_ATTEMPTS": "many"}, {})
    assert Delivery(3, 3).final and not Delivery(2, 3).final

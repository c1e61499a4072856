"""Every template renders from the events that use it; amounts through format_minor."""

import pytest

from services.notifications import domain, templates
from shared import contracts

OWNER, OTHER = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
AT = "2026-03-01T09:30:00+00:00"


def transfer_payload(kind, amount=123456, currency="EUR", **extra):
    return {
        "transfer_id": "t-1",
        "kind": kind,
        "status": "completed",
        "reason": None,
        "owner_id": OWNER,
        "to_owner_id": OTHER if kind == "internal" else OWNER,
        "amount": amount,
        "currency": currency,
        "transfer": {
            "transfer_id": "t-1",
            "kind": kind,
            "reference": "Rent March",
            "beneficiary": {"name": "Ada Lovelace", "iban": "DE89 3704 0044 0532 0130 00"}
            if kind == "payout"
            else None,
        },
        **extra,
    }


def rendered(event_type, payload, name="Ada"):
    return [
        (
            planned.user_id,
            planned.template,
            templates.render(planned.template, {**planned.context, "name": name}),
        )
        for planned in domain.plan(event_type, payload, AT)
    ]


def test_every_template_has_subject_body_and_short_text():
    assert set(templates._SOURCES) == set(domain.TEMPLATES)
    for name in domain.TEMPLATES:
        assert set(templates._SOURCES[name]) == set(templates.PARTS)


def test_welcome_greets_by_name_and_names_the_email():
    [(user, template, message)] = rendered(
        contracts.USER_REGISTERED,
        {"user_id": OWNER, "email": "ada@example.com", "full_name": "Ada"},
    )
    assert (user, template) == (OWNER, domain.Template.WELCOME)
    assert message.subject == "Welcome to Fintech, Ada"
    assert message.body.startswith("Hi Ada,")
    assert "ada@example.com" in message.body
    assert "notification settings" in message.body  # the footer


def test_a_missing_name_is_there():
    message = templates.render(domain.Template.MFA_ENABLED, {"at": AT, "name": None})
    assert message.body.startswith("Hi there,")


def test_deposit_amount_is_formatted_from_minor_units():
    [(_, template, message)] = rendered(contracts.TRANSFER_COMPLETED, transfer_payload("deposit"))
    assert template == domain.Template.DEPOSIT_RECEIVED
    assert message.subject == "Deposit received: EUR 1,234.56"
    assert "Rent March" in message.body and "t-1" in message.body
    assert message.short == "Fintech: your deposit of EUR 1,234.56 has arrived."


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(5, "EUR", "EUR 0.05"), (1500000, "JPY", "JPY 1,500,000"), (1234, "BHD", "BHD 1.234")],
)
def test_currencies_use_their_own_minor_digits(amount, currency, text):
    [(_, _, message)] = rendered(
        contracts.TRANSFER_COMPLETED, transfer_payload("deposit", amount, currency)
    )
    assert text in message.subject


def test_an_internal_transfer_tells_the_sender_and_the_receiver():
    messages = rendered(contracts.TRANSFER_COMPLETED, transfer_payload("internal"))
    assert [(user, template) for user, template, _ in messages] == [
        (OWNER, domain.Template.TRANSFER_SENT),
        (OTHER, domain.Template.TRANSFER_RECEIVED),
    ]
    assert messages[0][2].subject == "You sent EUR 1,234.56"
    assert messages[1][2].subject == "You received EUR 1,234.56"


def test_a_payout_names_the_beneficiary_and_the_iban_end_only():
    [(_, template, message)] = rendered(contracts.TRANSFER_COMPLETED, transfer_payload("payout"))
    assert template == domain.Template.PAYOUT_SENT
    assert "to Ada Lovelace" in message.body
    assert "IBAN ending 3000" in message.body
    assert "DE89" not in message.body


def test_a_failed_transfer_says_why_in_words():
    payload = transfer_payload("internal", reason=contracts.REASON_INSUFFICIENT_FUNDS)
    [(user, template, message)] = rendered(contracts.TRANSFER_FAILED, payload)
    assert (user, template) == (OWNER, domain.Template.TRANSFER_FAILED)
    assert message.subject == "Your transfer of EUR 1,234.56 did not go through"
    assert "not enough funds" in message.body
    assert "not enough funds" in message.short
    [(_, _, unknown)] = rendered(contracts.TRANSFER_FAILED, transfer_payload("payout", reason="x"))
    assert "payout" in unknown.subject and "could not be completed" in unknown.body


def test_new_login_and_mfa_mention_the_time():
    [(_, template, login)] = rendered(
        contracts.LOGIN_SUCCEEDED, {"user_id": OWNER, "session_id": "s", "mfa": True}
    )
    assert template == domain.Template.NEW_LOGIN
    assert "2026-03-01 09:30 UTC" in login.body
    assert "two-factor" in login.body
    assert "Not you?" in login.short
    [(_, template, mfa)] = rendered(contracts.MFA_ENABLED, {"user_id": OWNER})
    assert template == domain.Template.MFA_ENABLED
    assert mfa.subject == "Two-factor authentication is on"


def test_risk_review_renders_with_or_without_an_amount():
    payload = {"transfer_id": "t-9", "owner_id": OWNER, "amount": 990000, "currency": "EUR"}
    [(user, template, message)] = rendered(contracts.TRANSFER_REVIEW_REQUESTED, payload)
    assert (user, template) == (OWNER, domain.Template.RISK_REVIEW)
    assert "EUR 9,900.00" in message.body and "t-9" in message.body
    [(_, _, bare)] = rendered(
        contracts.TRANSFER_REVIEW_REQUESTED, {"transfer_id": "t-9", "owner_id": OWNER}
    )
    assert (
        bare.short == "Fintech: we are reviewing your transfer. We will tell you when it is done."
    )


def test_channels_get_their_own_parts():
    message = templates.render(domain.Template.MFA_ENABLED, {"at": AT, "name": "Ada"})
    assert message.for_channel(domain.EMAIL) == (message.subject, message.body)
    assert message.for_channel(domain.SMS) == (None, message.short)
    assert message.for_channel(domain.PUSH) == (message.subject, message.short)
    assert "\n" not in message.subject and "\n" not in message.short


def test_a_template_naming_a_missing_value_fails_loudly():
    with pytest.raises(Exception, match="undefined"):
        templates.render(domain.Template.DEPOSIT_RECEIVED, {"name": "Ada"})
    with pytest.raises(KeyError):
        templates.render("no_such_template", {})


@pytest.mark.parametrize(
    ("channels", "parts"),
    [
        ((domain.EMAIL,), {"subject", "body"}),
        ((domain.SMS,), {"short"}),
        ((domain.PUSH,), {"subject", "short"}),
        ((domain.EMAIL, domain.SMS), {"subject", "body", "short"}),
    ],
)
def test_only_the_parts_the_channels_send_are_rendered(channels, parts):
    everything = templates.render(domain.Template.MFA_ENABLED, {"at": AT, "name": "Ada"})
    some = templates.render(domain.Template.MFA_ENABLED, {"at": AT, "name": "Ada"}, channels)
    for part in templates.PARTS:
        assert getattr(some, part) == (getattr(everything, part) if part in parts else None)
    for channel in channels:
        assert some.for_channel(channel) == everything.for_channel(channel)

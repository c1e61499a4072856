"""Rules of notifications, as pure functions over plain values. Stdlib only.

- Which events notify whom, with which template (`plan`).
- Preferences: email on by default; SMS and push off until the customer
  gives a phone number (E.164) or a push token. A change that sets a phone
  (a push token) without saying whether SMS (push) is wanted switches it on;
  SMS without a phone, or push without a token, is refused.
- Which channels a notification goes out on (`channels`).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shared import contracts
from shared.events import is_id

# Channels.
EMAIL = "email"
SMS = "sms"
PUSH = "push"
CHANNELS = (EMAIL, SMS, PUSH)

# Notification statuses.
PENDING = "pending"  # to be sent (again)
SENDING = "sending"  # a worker has it until its lease ends
SENT = "sent"
FAILED = "failed"  # given up: the provider refused it, or every try failed
STATUSES = (PENDING, SENDING, SENT, FAILED)


class Template:
    """Template names, one per kind of news (stored with each notification).
    Not event types: a `transfer_failed` event becomes a TRANSFER_FAILED
    notification, a `transfer_completed` one any of three others."""

    WELCOME = "welcome"
    DEPOSIT_RECEIVED = "deposit_received"
    TRANSFER_SENT = "transfer_sent"
    TRANSFER_RECEIVED = "transfer_received"
    TRANSFER_FAILED = "transfer_failed"
    PAYOUT_SENT = "payout_sent"
    RISK_REVIEW = "risk_review"
    NEW_LOGIN = "new_login"
    MFA_ENABLED = "mfa_enabled"


TEMPLATES = tuple(value for name, value in vars(Template).items() if name.isupper())

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
MAX_PUSH_TOKEN = 4096


class MalformedEvent(ValueError):
    """An event this service cannot read: a producer bug, parked for a human."""


class PreferenceError(ValueError):
    """A preference change that breaks a rule; `field` names the culprit."""

    def __init__(self, code: str, field_name: str, message: str):
        super().__init__(message)
        self.code = code
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Preferences:
    email: bool = True
    sms: bool = False
    push: bool = False
    phone: str | None = None
    push_token: str | None = None

    def as_dict(self) -> dict:
        return {
            "email": self.email,
            "sms": self.sms,
            "push": self.push,
            "phone": self.phone,
            "push_token": self.push_token,
        }


DEFAULT_PREFERENCES = Preferences()


def is_e164(phone: object) -> bool:
    return isinstance(phone, str) and bool(E164.match(phone))


def merge_preferences(current: Preferences, changes: Mapping) -> Preferences:
    """The preferences after a change: keys absent stay, `None` clears phone or token."""
    unknown = set(changes) - {"email", "sms", "push", "phone", "push_token"}
    if unknown:
        name = sorted(unknown)[0]
        raise PreferenceError("unknown_preference", name, f"Unknown preference {name!r}.")
    updated = current
    if "phone" in changes:
        phone = changes["phone"]
        if phone is not None and not is_e164(phone):
            raise PreferenceError(
                "invalid_phone", "phone", "Must be an E.164 number such as +4915112345678."
            )
        updated = replace(updated, phone=phone)
        if phone is not None and current.phone is None and "sms" not in changes:
            updated = replace(updated, sms=True)  # off until a phone is set
    if "push_token" in changes:
        token = changes["push_token"]
        if token is not None:
            if not isinstance(token, str) or not token.strip():
                raise PreferenceError("invalid_push_token", "push_token", "Must not be empty.")
            if len(token) > MAX_PUSH_TOKEN:
                raise PreferenceError(
                    "invalid_push_token", "push_token", f"At most {MAX_PUSH_TOKEN} characters."
                )
            token = token.strip()
        updated = replace(updated, push_token=token)
        if token is not None and current.push_token is None and "push" not in changes:
            updated = replace(updated, push=True)  # off until a token is set
    for name in ("email", "sms", "push"):
        if name in changes:
            if not isinstance(changes[name], bool):
                raise PreferenceError("invalid_preference", name, "Must be true or false.")
            updated = replace(updated, **{name: changes[name]})
    if updated.sms and updated.phone is None:
        raise PreferenceError("phone_required", "sms", "SMS needs a phone number (phone).")
    if updated.push and updated.push_token is None:
        raise PreferenceError("push_token_required", "push", "Push needs a push_token.")
    return updated


@dataclass(frozen=True)
class Recipient:
    """What is known about a customer: preferences, and the address book entry."""

    preferences: Preferences = DEFAULT_PREFERENCES
    email: str | None = None


def channels(recipient: Recipient) -> dict[str, str | None]:
    """Channel -> address for every channel the customer wants.

    Email's address may be None (the customer is not in the directory yet);
    SMS and push are only on with their address (merge_preferences).
    """
    prefs = recipient.preferences
    wanted: dict[str, str | None] = {}
    if prefs.email:
        wanted[EMAIL] = recipient.email
    if prefs.sms and prefs.phone:
        wanted[SMS] = prefs.phone
    if prefs.push and prefs.push_token:
        wanted[PUSH] = prefs.push_token
    return wanted


# -- which events notify whom -------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One customer to tell about one event, with one template."""

    user_id: str
    template: str
    context: dict = field(default_factory=dict)


# Failure reasons as customers read them.
FAILURE_REASONS: Mapping[str, str] = {
    contracts.REASON_INSUFFICIENT_FUNDS: "there were not enough funds in the account",
    contracts.REASON_RISK_REJECTED: "it did not pass our security checks",
    contracts.REASON_CARD_DECLINED: "the card was declined",
    contracts.REASON_PAYOUT_FAILED: "the receiving bank did not accept it",
    contracts.REASON_PROVIDER_UNAVAILABLE: "our payment partner could not be reached",
    contracts.REASON_ACCOUNT_UNAVAILABLE: "one of the accounts cannot be used",
    contracts.REASON_TIMED_OUT: "it could not be completed in time",
}
KIND_LABELS: Mapping[str, str] = {
    contracts.KIND_DEPOSIT: "deposit",
    contracts.KIND_INTERNAL: "transfer",
    contracts.KIND_PAYOUT: "payout",
}


def failure_text(reason: str | None) -> str:
    return FAILURE_REASONS.get(reason or "", "it could not be completed")


def _user(payload: Mapping, key: str, required: bool = True) -> str | None:
    value = payload.get(key)
    if is_id(value):
        return value
    if value is None and not required:
        return None
    raise MalformedEvent(f"{key} must be an id of 1 to 36 characters, got {value!r}")


def _money(payload: Mapping) -> tuple[int, str]:
    amount, currency = payload.get("amount"), payload.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MalformedEvent(f"amount must be integer minor units, got {amount!r}")
    if not (isinstance(currency, str) and len(currency) == 3):
        raise MalformedEvent(f"currency must be an ISO 4217 code, got {currency!r}")
    return amount, currency


def _transfer_context(payload: Mapping) -> dict:
    amount, currency = _money(payload)
    transfer = payload.get("transfer") if isinstance(payload.get("transfer"), Mapping) else {}
    beneficiary = transfer.get("beneficiary") if isinstance(transfer, Mapping) else None
    beneficiary = beneficiary if isinstance(beneficiary, Mapping) else {}
    iban = str(beneficiary.get("iban") or "").replace(" ", "")
    kind = payload.get("kind") or transfer.get("kind")
    return {
        "transfer_id": payload.get("transfer_id") or transfer.get("transfer_id"),
        "kind": kind,
        "kind_label": KIND_LABELS.get(kind, "transfer"),
        "amount": amount,
        "currency": currency,
        "reference": transfer.get("reference"),
        "beneficiary_name": beneficiary.get("name"),
        "iban_last4": iban[-4:] if iban else None,
    }


def plan(event_type: str, payload: Mapping, occurred_at: str | None = None) -> list[Planned]:
    """The notifications an event asks for (none for events that concern nobody)."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent("the payload must be an object")
    at = {"at": occurred_at}
    if event_type == contracts.USER_REGISTERED:
        context = {"email": payload.get("email"), **at}
        return [Planned(_user(payload, "user_id"), Template.WELCOME, context)]
    if event_type == contracts.LOGIN_SUCCEEDED:
        context = {"mfa": bool(payload.get("mfa")), **at}
        return [Planned(_user(payload, "user_id"), Template.NEW_LOGIN, context)]
    if event_type == contracts.MFA_ENABLED:
        return [Planned(_user(payload, "user_id"), Template.MFA_ENABLED, dict(at))]
    if event_type == contracts.TRANSFER_COMPLETED:
        owner = _user(payload, "owner_id")
        context = {**_transfer_context(payload), **at}
        kind = context["kind"]
        if kind == contracts.KIND_DEPOSIT:
            return [Planned(owner, Template.DEPOSIT_RECEIVED, context)]
        if kind == contracts.KIND_PAYOUT:
            return [Planned(owner, Template.PAYOUT_SENT, context)]
        if kind == contracts.KIND_INTERNAL:
            planned = [Planned(owner, Template.TRANSFER_SENT, context)]
            receiver = _user(payload, "to_owner_id", required=False)
            # One notification per customer, event and channel: moving money
            # between one's own accounts is told once, as sent.
            if receiver is not None and receiver != owner:
                planned.append(Planned(receiver, Template.TRANSFER_RECEIVED, context))
            return planned
        raise MalformedEvent(f"unknown transfer kind {kind!r}")
    if event_type == contracts.TRANSFER_FAILED:
        context = {**_transfer_context(payload), **at}
        context["reason"] = payload.get("reason")
        context["reason_text"] = failure_text(payload.get("reason"))
        return [Planned(_user(payload, "owner_id"), Template.TRANSFER_FAILED, context)]
    if event_type == contracts.TRANSFER_REVIEW_REQUESTED:
        transfer = payload.get("transfer") if isinstance(payload.get("transfer"), Mapping) else {}
        merged = {**transfer, **payload}
        owner = _user(merged, "owner_id")
        try:
            context = {**_transfer_context(merged), **at}
        except MalformedEvent:
            context = {"transfer_id": merged.get("transfer_id"), "amount": None, **at}
        return [Planned(owner, Template.RISK_REVIEW, context)]
    return []

"""Cross-service contracts: event types, their typed payloads, and routing.

Producers build these payloads and consumers parse them with the same
classes, so a renamed or missing field breaks a test (or parks one
malformed event) instead of silently dropping messages in production.
Every event travels in the envelope of shared.events.

Routing: events about a transfer are published with the routing key
`<type>.<kind>` (`transfer_requested.deposit`), so a participant binds only
the kinds it acts on and the broker never delivers it the others; a
consumer that wants every kind binds `<type>.#`. Everything else is
routed by its type alone.

Standard library only.
"""

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

AUTH = "auth"
ACCOUNTS = "accounts"
TRANSACTIONS = "transactions"
RISK = "risk"
PAYMENTS = "payments"
NOTIFICATIONS = "notifications"
ANALYTICS = "analytics"
# Every nameko service of the platform, by its `name`.
SERVICES = (ACCOUNTS, ANALYTICS, AUTH, NOTIFICATIONS, PAYMENTS, RISK, TRANSACTIONS)

# auth.events (payloads: plain objects, fields listed here)
USER_REGISTERED = "user_registered"  # {user_id, email, full_name}
LOGIN_SUCCEEDED = "login_succeeded"  # {user_id, session_id, mfa}
LOGIN_FAILED = "login_failed"  # {user_id, failures, factor: password|totp, locked_until|null}
SESSION_REVOKED = "session_revoked"  # {session_id, user_id, reason, revoked_at}
MFA_ENABLED = "mfa_enabled"  # {user_id}

# Event types of the transfer saga; their payloads are the classes below.
ACCOUNT_OPENED = "account_opened"
TRANSFER_REQUESTED = "transfer_requested"
TRANSFER_APPROVED = "transfer_approved"
TRANSFER_REJECTED = "transfer_rejected"
TRANSFER_REVIEW_REQUESTED = "transfer_review_requested"
TRANSFER_POSTED = "transfer_posted"
TRANSFER_REFUSED = "transfer_refused"
FUNDS_RESERVED = "funds_reserved"
FUNDS_RELEASED = "funds_released"
DEPOSIT_CREDITED = "deposit_credited"
PAYOUT_CAPTURED = "payout_captured"
CARD_CHARGED = "card_charged"
CARD_CHARGE_FAILED = "card_charge_failed"
PAYOUT_SUCCEEDED = "payout_succeeded"
PAYOUT_FAILED = "payout_failed"
TRANSFER_COMPLETED = "transfer_completed"
TRANSFER_FAILED = "transfer_failed"

# Who publishes each event, on its exchange `<service>.events`. Consumers name
# the same service (`@saga_step(<publisher>, <event>)`); ops/scripts/
# event_diagram.py checks that they agree and draws docs/ARCHITECTURE.md's diagram.
PUBLISHERS = {
    AUTH: (USER_REGISTERED, LOGIN_SUCCEEDED, LOGIN_FAILED, SESSION_REVOKED, MFA_ENABLED),
    ACCOUNTS: (
        ACCOUNT_OPENED,
        TRANSFER_POSTED,
        TRANSFER_REFUSED,
        FUNDS_RESERVED,
        FUNDS_RELEASED,
        DEPOSIT_CREDITED,
        PAYOUT_CAPTURED,
    ),
    TRANSACTIONS: (TRANSFER_REQUESTED, TRANSFER_COMPLETED, TRANSFER_FAILED),
    RISK: (TRANSFER_APPROVED, TRANSFER_REJECTED, TRANSFER_REVIEW_REQUESTED),
    PAYMENTS: (CARD_CHARGED, CARD_CHARGE_FAILED, PAYOUT_SUCCEEDED, PAYOUT_FAILED),
}

# Transfer kinds and failure reasons (API: failure_reason).
KIND_DEPOSIT = "deposit"
KIND_INTERNAL = "internal"
KIND_PAYOUT = "payout"
KINDS = (KIND_DEPOSIT, KIND_INTERNAL, KIND_PAYOUT)
REASON_INSUFFICIENT_FUNDS = "insufficient_funds"
REASON_RISK_REJECTED = "risk_rejected"
REASON_CARD_DECLINED = "card_declined"
REASON_PAYOUT_FAILED = "payout_failed"
REASON_PROVIDER_UNAVAILABLE = "provider_unavailable"
REASON_ACCOUNT_UNAVAILABLE = "account_unavailable"
REASON_TIMED_OUT = "timed_out"

# Risk decisions.
APPROVE = "approve"
REVIEW = "review"
REJECT = "reject"

# Access-token claims the gateway relies on.
TOKEN_ISSUER = "fintech-auth"  # noqa: S105 (a name, not a secret)
TOKEN_AUDIENCE = "fintech-api"  # noqa: S105


class MalformedEvent(ValueError):
    """A payload that does not match its contract: a producer bug, parked for a human."""


# -- typed payloads -----------------------------------------------------------------


def _parse_str(value, name):
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{name} must be a non-empty string, got {value!r}")
    return value


def _parse_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"{name} must be an integer, got {value!r}")
    return value


def _parse_bool(value, name):
    if not isinstance(value, bool):
        raise MalformedEvent(f"{name} must be true or false, got {value!r}")
    return value


def _parse_object(value, name):
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"{name} must be an object, got {value!r}")
    return dict(value)


def _parse_strings(value, name):
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise MalformedEvent(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


_SCALARS = {str: _parse_str, int: _parse_int, bool: _parse_bool, dict: _parse_object}


def _tuple_of(item):
    def parse(value, name):
        if not isinstance(value, list | tuple):
            raise MalformedEvent(f"{name} must be a list, got {value!r}")
        return tuple(item._parse_nested(v, f"{name}[{i}]") for i, v in enumerate(value))

    return parse


def _parser(hint):
    """A function (value, name) -> parsed value for a field's annotation."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [h for h in typing.get_args(hint) if h is not type(None)]
        optional, (hint,) = True, members
    if hint in _SCALARS:
        parse = _SCALARS[hint]
    elif typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        parse = _parse_strings if item is str else _tuple_of(item)
    elif isinstance(hint, type) and issubclass(hint, Payload):
        parse = hint._parse_nested
    else:  # pragma: no cover (a contract written with a type this module does not know)
        raise TypeError(f"no parser for {hint!r}")
    if not optional:
        return parse
    return lambda value, name: None if value is None else parse(value, name)


class Payload:
    """A frozen dataclass that reads itself from, and writes itself to, a JSON payload.

    Required fields (no default) must be present and well typed; optional
    ones may be missing or null; unknown keys are ignored, so a producer may
    add fields before its consumers know them.
    """

    _fields: ClassVar[tuple]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._fields = ()  # filled by _finish once the dataclass exists

    @classmethod
    def _finish(cls) -> None:
        hints = typing.get_type_hints(cls)
        cls._fields = tuple(
            (
                f.name,
                _parser(hints[f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )

    @classmethod
    def from_payload(cls, payload) -> Self:
        if not isinstance(payload, Mapping):
            raise MalformedEvent(f"{cls.__name__}: the payload must be an object, got {payload!r}")
        values = {}
        for name, parse, required in cls._fields:
            value = payload.get(name)
            if value is None:
                if required:
                    raise MalformedEvent(f"{cls.__name__}: {name} is missing")
                continue
            values[name] = parse(value, f"{cls.__name__}.{name}")
        return cls(**values)

    @classmethod
    def _parse_nested(cls, value, name) -> Self:
        if not isinstance(value, Mapping):
            raise MalformedEvent(f"{name} must be an object, got {value!r}")
        return cls.from_payload(value)

    def payload(self) -> dict:
        out = {}
        for name, _, _ in self._fields:
            value = getattr(self, name)
            if isinstance(value, Payload):
                value = value.payload()
            elif isinstance(value, tuple):
                value = [v.payload() if isinstance(v, Payload) else v for v in value]
            out[name] = value
        return out


def _contract(cls):
    """Make `cls` a frozen dataclass payload and register its event type."""
    cls = dataclass(frozen=True)(cls)
    cls._finish()
    if getattr(cls, "TYPE", ""):
        EVENTS[cls.TYPE] = cls
    return cls


def _shape(cls):
    """A dataclass of fields that several contracts share (not an event itself)."""
    return dataclass(frozen=True)(cls)


EVENTS: dict[str, type["Event"]] = {}


@_contract
class Step(Payload):
    """A saga step as a transfer's history shows it: its event type and time."""

    type: str
    at: str


@_contract
class TransferDetails(Payload):
    """The transfer as transactions accepted it; carried by every saga event."""

    transfer_id: str
    kind: str
    owner_id: str
    amount: int
    currency: str
    from_account_id: str | None = None
    to_account_id: str | None = None
    to_owner_id: str | None = None
    reference: str | None = None
    source: dict | None = None  # deposit: {type, token}
    beneficiary: dict | None = None  # payout: {name, iban}
    deadline: str | None = None


class Event(Payload):
    """A payload with an event type; events about a transfer route by its kind."""

    TYPE: ClassVar[str] = ""

    def routing_key(self) -> str:
        return routing_key_of(self.TYPE, self.payload())


def routing_key(event_type: str, kind: str | None) -> str:
    return f"{event_type}.{kind}" if kind in KINDS else event_type


def routing_key_of(event_type: str, payload: Mapping) -> str:
    """The routing key of a stored payload (the outbox relay's view of it)."""
    kind = payload.get("kind") if isinstance(payload, Mapping) else None
    transfer = payload.get("transfer") if isinstance(payload, Mapping) else None
    if kind is None and isinstance(transfer, Mapping):
        kind = transfer.get("kind")
    return routing_key(event_type, kind) if event_type in EVENTS else event_type


def binding_keys(event_type: str, kinds: tuple[str, ...] | None) -> tuple[str, ...]:
    """What a consumer of `event_type` binds: every kind, or the ones named
    (plus the bare type, which messages from before per-kind routing used)."""
    if not kinds:
        return (f"{event_type}.#",)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown transfer kinds {sorted(unknown)}")
    return (event_type, *(f"{event_type}.{kind}" for kind in kinds))


@_contract
class AccountOpened(Event):
    TYPE: ClassVar[str] = ACCOUNT_OPENED
    account_id: str
    owner_id: str
    currency: str
    name: str


@_contract
class TransferRequested(Event, TransferDetails):
    """transactions accepted a transfer: the payload is the transfer itself."""

    TYPE: ClassVar[str] = TRANSFER_REQUESTED

    @property
    def transfer(self) -> TransferDetails:
        return TransferDetails(**{name: getattr(self, name) for name, _, _ in self._fields})


@_shape
class _Assessed(Event):
    transfer_id: str
    score: int
    reasons: tuple[str, ...]
    transfer: TransferDetails
    review_id: str | None = None  # decided after a review: which, and by whom
    decided_by: str | None = None


@_contract
class TransferApproved(_Assessed):
    """risk's final yes (at once, or an admin's after a review)."""

    TYPE: ClassVar[str] = TRANSFER_APPROVED


@_contract
class TransferRejected(_Assessed):
    """risk's final no: at once, by an admin, or a review left undecided."""

    TYPE: ClassVar[str] = TRANSFER_REJECTED


@_contract
class TransferReviewRequested(Event):
    """risk holds the transfer for an admin's decision."""

    TYPE: ClassVar[str] = TRANSFER_REVIEW_REQUESTED
    transfer_id: str
    review_id: str
    owner_id: str
    score: int
    reasons: tuple[str, ...]
    expires_at: str
    transfer: TransferDetails


@_shape
class _Ledger(Event):
    """What accounts did with a transfer's money. `prior_step` is the step that
    caused it when transactions does not consume that one itself (its history
    still shows it)."""

    transfer_id: str
    transfer: TransferDetails


@_contract
class TransferPosted(_Ledger):
    """Internal transfer: debit and credit in one journal entry."""

    TYPE: ClassVar[str] = TRANSFER_POSTED
    entry_id: str
    prior_step: Step | None = None


@_contract
class DepositCredited(_Ledger):
    TYPE: ClassVar[str] = DEPOSIT_CREDITED
    entry_id: str
    prior_step: Step | None = None


@_contract
class PayoutCaptured(_Ledger):
    TYPE: ClassVar[str] = PAYOUT_CAPTURED
    entry_id: str
    prior_step: Step | None = None


@_contract
class TransferRefused(_Ledger):
    """accounts would not move the money: insufficient_funds | account_unavailable."""

    TYPE: ClassVar[str] = TRANSFER_REFUSED
    reason: str
    prior_step: Step | None = None


@_contract
class FundsReserved(_Ledger):
    """Payout: the amount is held on the paying account."""

    TYPE: ClassVar[str] = FUNDS_RESERVED
    hold_id: str
    account_id: str
    amount: int
    currency: str
    prior_step: Step | None = None


@_contract
class FundsReleased(_Ledger):
    """Compensation: a hold given back (the payout failed, or the transfer did)."""

    TYPE: ClassVar[str] = FUNDS_RELEASED
    hold_id: str
    account_id: str
    reason: str | None = None
    prior_step: Step | None = None


@_shape
class _ProviderOutcome(Event):
    """A provider operation finished. `transfer` is absent only for an
    operation an operator started outside any saga (nobody acts on those)."""

    transfer_id: str
    provider: str
    amount: int
    currency: str
    transfer: TransferDetails | None = None
    provider_reference: str | None = None


@_contract
class CardCharged(_ProviderOutcome):
    TYPE: ClassVar[str] = CARD_CHARGED


@_contract
class PayoutSucceeded(_ProviderOutcome):
    TYPE: ClassVar[str] = PAYOUT_SUCCEEDED


@_contract
class CardChargeFailed(_ProviderOutcome):
    TYPE: ClassVar[str] = CARD_CHARGE_FAILED
    reason: str = REASON_CARD_DECLINED  # the transfer's failure_reason
    provider_reason: str | None = None  # the provider's own code


@_contract
class PayoutFailed(_ProviderOutcome):
    TYPE: ClassVar[str] = PAYOUT_FAILED
    reason: str = REASON_PAYOUT_FAILED
    provider_reason: str | None = None


@_shape
class _Ended(Event):
    """transactions' last word on a transfer (notifications, analytics and the
    gateway's waiting requests listen). It carries the whole of what
    GET /v1/transfers/{id} shows, as of its end."""

    transfer_id: str
    kind: str
    status: str
    owner_id: str
    amount: int
    currency: str
    transfer: TransferDetails
    to_owner_id: str | None = None
    reason: str | None = None
    steps: tuple[Step, ...] = ()
    created_at: str | None = None
    updated_at: str | None = None


@_contract
class TransferCompleted(_Ended):
    TYPE: ClassVar[str] = TRANSFER_COMPLETED


@_contract
class TransferFailed(_Ended):
    TYPE: ClassVar[str] = TRANSFER_FAILED


# A uuid as str(uuid.uuid4()) writes it (routing keys, queue names).
UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# A gateway process waiting on transfers it started gives transactions its
# own routing key; their outcome is routed there too (besides
# `transfer_completed.<kind>` / `transfer_failed.<kind>`), so no gateway
# process follows every outcome. Only keys of this form are accepted.
OUTCOME_ROUTE_PREFIX = "gateway.outcomes."
OUTCOME_ROUTE_PATTERN = re.escape(OUTCOME_ROUTE_PREFIX) + UUID_PATTERN

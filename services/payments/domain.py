"""Rules of payments: provider operations, their outcomes and events. Stdlib only.

An operation is one call to the payment provider on behalf of one transfer:
charging the customer's card for a deposit, or paying a beneficiary out.
It is recorded "in flight" before the provider is called and finished
exactly once, as succeeded or failed; finishing it stages the event the
saga waits for. While it is in flight it may be sent again any number of
times, always with the same idempotency key, so the provider performs it
at most once.
"""

import hashlib
import json
from enum import StrEnum

from shared import contracts
from shared import iban as iban_format


class OperationKind(StrEnum):
    CHARGE = "charge"
    PAYOUT = "payout"


class OperationStatus(StrEnum):
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED = (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


def idempotency_key(kind: OperationKind, transfer_id: str) -> str:
    """One key per (operation, transfer): a re-send after a crash reuses it."""
    return f"{kind}-{transfer_id}"


def request_fingerprint(request: dict) -> str:
    """What a repeated call must match to be the same operation."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# The events that finish an operation.
_OUTCOME_EVENTS = {
    (OperationKind.CHARGE, OperationStatus.SUCCEEDED): contracts.CardCharged,
    (OperationKind.CHARGE, OperationStatus.FAILED): contracts.CardChargeFailed,
    (OperationKind.PAYOUT, OperationStatus.SUCCEEDED): contracts.PayoutSucceeded,
    (OperationKind.PAYOUT, OperationStatus.FAILED): contracts.PayoutFailed,
}


def outcome_event(
    kind: OperationKind,
    status: OperationStatus,
    *,
    transfer_id: str,
    provider: str,
    provider_reference: str | None,
    provider_reason: str | None,
    amount: int,
    currency: str,
    transfer: dict | None,
) -> contracts.Event:
    """The event announcing a finished operation.

    A failure's `reason` is the transfer's failure_reason (the contract's
    default per kind); the provider's own code (card_declined,
    insufficient_funds, account_closed...) rides along as provider_reason.
    """
    fields = {
        "transfer_id": transfer_id,
        "provider": provider,
        "provider_reference": provider_reference,
        "amount": amount,
        "currency": currency,
        "transfer": contracts.TransferDetails.from_payload(transfer) if transfer else None,
    }
    if status == OperationStatus.FAILED:
        fields["provider_reason"] = provider_reason
    return _OUTCOME_EVENTS[(kind, status)](**fields)


# Provider webhook event types that report an operation's outcome.
WEBHOOK_OUTCOMES: dict[str, tuple[OperationKind, OperationStatus]] = {
    "charge.succeeded": (OperationKind.CHARGE, OperationStatus.SUCCEEDED),
    "charge.failed": (OperationKind.CHARGE, OperationStatus.FAILED),
    "payout.succeeded": (OperationKind.PAYOUT, OperationStatus.SUCCEEDED),
    "payout.failed": (OperationKind.PAYOUT, OperationStatus.FAILED),
}


def normalize_beneficiary(name: str, iban: str) -> dict:
    """Whitespace-insensitive, so a re-sent payout matches the first one.

    Whether the IBAN is acceptable is the provider's call: an IBAN it
    refuses fails the payout (payout_failed), it is not an error here.
    """
    return {"name": " ".join(name.split()), "iban": iban_format.normalise(iban)}

"""payments' steps in the transfer saga.

Each is idempotent through the provider operation itself (one per kind and
transfer, with a fixed idempotency key), so a duplicate delivery returns
the recorded outcome and stages no second event. A provider that cannot
be reached raises ProviderUnavailable: the saga step is retried with
backoff, sending the same idempotency key, until the provider answers.
"""

from services.payments import handlers
from services.payments.provider import PaymentProvider
from shared import contracts
from shared.database import UnitOfWork


def on_transfer_requested(uow: UnitOfWork, provider: PaymentProvider, envelope: dict) -> None:
    """A deposit: charge the card it names."""
    transfer = envelope["payload"]
    if transfer["kind"] != contracts.KIND_DEPOSIT:
        return
    handlers.charge_for_deposit(
        uow,
        provider,
        transfer["transfer_id"],
        transfer["amount"],
        transfer["currency"],
        transfer["source"]["token"],
        transfer=transfer,
        causation_id=envelope["event_id"],
    )


def on_funds_reserved(uow: UnitOfWork, provider: PaymentProvider, envelope: dict) -> None:
    """A payout whose funds are held: send it to the beneficiary."""
    transfer = envelope["payload"]["transfer"]
    if transfer["kind"] != contracts.KIND_PAYOUT:
        return
    handlers.payout(
        uow,
        provider,
        transfer["transfer_id"],
        transfer["amount"],
        transfer["currency"],
        transfer["beneficiary"],
        transfer=transfer,
        causation_id=envelope["event_id"],
    )

"""payments' steps in the transfer saga.

Each is idempotent through the provider operation itself (one per kind and
transfer, with a fixed idempotency key), so a duplicate delivery returns
the recorded outcome and stages no second event. A provider that cannot
be reached raises ProviderUnavailable: the saga step is retried with
backoff, sending the same idempotency key, until the provider answers.
"""

import json
import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from services.payments import handlers
from services.payments.domain import OperationKind, OperationStatus
from services.payments.models import ProviderOperation
from services.payments.provider import PaymentProvider
from shared import contracts
from shared.database import UnitOfWork
from shared.provider_errors import ProviderUnavailable

log = logging.getLogger(__name__)


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


def redrive_in_flight(
    uow: UnitOfWork,
    provider: PaymentProvider,
    older_than: timedelta,
    now: datetime,
    batch: int = 50,
) -> int:
    """Send again the operations a provider never answered, with the same key.

    An outage longer than a saga step's retries parks the step and leaves
    its operation in flight: the customer's deposit or payout would wait for
    an operator. Re-sending the operation with its own idempotency key is
    safe (the provider deduplicates), so this does it on a timer; the first
    definitive answer records the outcome and stages its event, and the saga
    moves on. Returns how many operations got a definitive answer.
    """
    with uow.transaction() as session:
        stale = session.execute(
            select(ProviderOperation.kind, ProviderOperation.transfer)
            .where(
                ProviderOperation.status == OperationStatus.IN_FLIGHT,
                ProviderOperation.updated_at < now - older_than,
                ProviderOperation.transfer.is_not(None),
            )
            .order_by(ProviderOperation.updated_at)
            .limit(batch)
        ).all()
    settled = 0
    for kind, transfer_json in stale:
        transfer = json.loads(transfer_json)
        envelope = {
            "event_id": None,
            "payload": transfer if kind == OperationKind.CHARGE else {"transfer": transfer},
        }
        try:
            if kind == OperationKind.CHARGE:
                on_transfer_requested(uow, provider, envelope)
            else:
                on_funds_reserved(uow, provider, envelope)
            settled += 1
        except ProviderUnavailable:
            log.info(
                "provider still unavailable; will re-send later",
                extra={"transfer_id": transfer["transfer_id"], "kind": kind},
            )
    return settled

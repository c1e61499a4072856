"""payments' steps in the transfer saga: one `handle_<event>` per event it acts on.

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


def handle_transfer_requested(uow: UnitOfWork, provider: PaymentProvider, envelope: dict) -> None:
    """A deposit: charge the card it names."""
    transfer = contracts.TransferRequested.from_payload(envelope["payload"]).transfer
    if transfer.kind != contracts.KIND_DEPOSIT:
        return  # bound to deposits only; a message from before per-kind routing
    _charge(uow, provider, transfer, envelope["event_id"])


def _charge(uow, provider, transfer: contracts.TransferDetails, causation_id) -> None:
    if not transfer.source or not transfer.source.get("token"):
        raise contracts.MalformedEvent(f"deposit {transfer.transfer_id} names no card token")
    handlers.charge_for_deposit(
        uow,
        provider,
        transfer.transfer_id,
        transfer.amount,
        transfer.currency,
        transfer.source["token"],
        transfer=transfer.payload(),
        causation_id=causation_id,
    )


def handle_funds_reserved(uow: UnitOfWork, provider: PaymentProvider, envelope: dict) -> None:
    """A payout whose funds are held: send it to the beneficiary."""
    transfer = contracts.FundsReserved.from_payload(envelope["payload"]).transfer
    if transfer.kind != contracts.KIND_PAYOUT:
        return  # only payouts hold funds; a message from before that
    _pay_out(uow, provider, transfer, envelope["event_id"])


def _pay_out(uow, provider, transfer: contracts.TransferDetails, causation_id) -> None:
    if not transfer.beneficiary:
        raise contracts.MalformedEvent(f"payout {transfer.transfer_id} names no beneficiary")
    handlers.payout(
        uow,
        provider,
        transfer.transfer_id,
        transfer.amount,
        transfer.currency,
        transfer.beneficiary,
        transfer=transfer.payload(),
        causation_id=causation_id,
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
    with uow.commit_on_exit() as session:
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
        transfer = contracts.TransferDetails.from_payload(json.loads(transfer_json))
        try:
            if kind == OperationKind.CHARGE:
                _charge(uow, provider, transfer, None)
            else:
                _pay_out(uow, provider, transfer, None)
            settled += 1
        except ProviderUnavailable:
            log.info(
                "provider still unavailable; will re-send later",
                extra={"transfer_id": transfer.transfer_id, "kind": kind},
            )
    return settled

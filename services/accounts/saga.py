"""accounts' steps in the transfer saga.

Each step runs in one transaction: claim the event in the inbox (a
duplicate delivery does nothing), change the ledger, stage the outcome
event in the outbox. Every saga event carries the original request as
`payload["transfer"]`, so a step needs nothing but the event.
"""

import logging
from datetime import datetime

from services.accounts import ledger
from shared import contracts
from shared.database import UnitOfWork
from shared.inbox import claim
from shared.outbox import record_event

log = logging.getLogger(__name__)


def _step(uow: UnitOfWork, envelope: dict, handler: str, effect) -> None:
    with uow.transaction() as session:
        ledger.lock_transfer(session, envelope["payload"]["transfer_id"])
        if not claim(session, envelope, handler):
            return
        effect(session, envelope["payload"], envelope["event_id"])


def _announce_posting(session, outcome, posted_event: str, transfer: dict, event_id: str) -> None:
    """The entry was posted (`outcome` is its id), or refused: say which."""
    if isinstance(outcome, ledger.Refused):
        record_event(
            session,
            contracts.FUNDS_RELEASED,
            {
                "transfer_id": transfer["transfer_id"],
                "reason": outcome.reason,
                "transfer": transfer,
            },
            causation_id=event_id,
        )
    else:
        record_event(
            session,
            posted_event,
            {"transfer_id": transfer["transfer_id"], "entry_id": outcome, "transfer": transfer},
            causation_id=event_id,
        )


def on_transfer_assessed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Risk approved an internal transfer or a payout: reserve the funds."""

    def effect(session, payload, event_id):
        transfer = payload["transfer"]
        if payload["decision"] != contracts.APPROVE or transfer["kind"] == contracts.KIND_DEPOSIT:
            return
        if ledger.is_closed(session, transfer["transfer_id"]):
            return
        outcome = ledger.place_hold(
            session,
            transfer["transfer_id"],
            transfer["from_account_id"],
            transfer["amount"],
            transfer["currency"],
            now,
        )
        if isinstance(outcome, ledger.Refused):
            record_event(
                session,
                contracts.FUNDS_RESERVATION_FAILED,
                {
                    "transfer_id": transfer["transfer_id"],
                    "reason": outcome.reason,
                    "transfer": transfer,
                },
                causation_id=event_id,
            )
        else:
            record_event(
                session,
                contracts.FUNDS_RESERVED,
                {
                    "transfer_id": transfer["transfer_id"],
                    "hold_id": outcome.hold_id,
                    "account_id": outcome.account_id,
                    "amount": outcome.amount,
                    "currency": outcome.currency,
                    "transfer": transfer,
                },
                causation_id=event_id,
            )

    _step(uow, envelope, "accounts.on_transfer_assessed", effect)


def on_funds_reserved(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Internal transfer: post debit and credit, capturing the hold, in one entry."""

    def effect(session, payload, event_id):
        transfer = payload["transfer"]
        if transfer["kind"] != contracts.KIND_INTERNAL:
            return  # payouts wait for the provider
        if ledger.is_closed(session, transfer["transfer_id"]):
            # Ended meanwhile (it cannot have expired with a hold: see
            # ledger.expire); never post a closed transfer, give the hold back.
            _release(
                session,
                transfer["transfer_id"],
                contracts.REASON_TIMED_OUT,
                transfer,
                event_id,
                now,
            )
            return
        outcome = ledger.post_internal_transfer(
            session,
            transfer["transfer_id"],
            transfer["to_account_id"],
            transfer.get("reference"),
            now,
        )
        _announce_posting(session, outcome, contracts.TRANSFER_POSTED, transfer, event_id)

    _step(uow, envelope, "accounts.on_funds_reserved", effect)


def on_card_charged(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Deposit: the provider collected the money; credit the customer."""

    def effect(session, payload, event_id):
        transfer = payload["transfer"]
        outcome = ledger.credit_deposit(
            session,
            transfer["transfer_id"],
            transfer["to_account_id"],
            transfer["amount"],
            transfer["currency"],
            now,
        )
        if isinstance(outcome, ledger.Refused):
            # Validated when requested, so this is an account closed since:
            # the money is with us and must be refunded by an operator.
            log.error(
                "deposit charged but not credited",
                extra={"transfer_id": transfer["transfer_id"], "reason": outcome.reason},
            )
        _announce_posting(session, outcome, contracts.DEPOSIT_CREDITED, transfer, event_id)

    _step(uow, envelope, "accounts.on_card_charged", effect)


def on_payout_succeeded(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Payout: the beneficiary was paid; the held funds leave the account."""

    def effect(session, payload, event_id):
        transfer = payload["transfer"]
        outcome = ledger.capture_payout(session, transfer["transfer_id"], now)
        if isinstance(outcome, ledger.Refused):
            log.error(
                "payout sent but no active hold to capture",
                extra={"transfer_id": transfer["transfer_id"]},
            )
            return
        record_event(
            session,
            contracts.PAYOUT_CAPTURED,
            {"transfer_id": transfer["transfer_id"], "entry_id": outcome, "transfer": transfer},
            causation_id=event_id,
        )

    _step(uow, envelope, "accounts.on_payout_succeeded", effect)


def _release(
    session,
    transfer_id: str,
    reason: str | None,
    transfer: dict | None,
    event_id: str,
    now: datetime,
) -> None:
    """The compensation: give back the hold, if one is still active, and say so."""
    hold = ledger.release_hold(session, transfer_id, now)
    if hold is not None:
        record_event(
            session,
            contracts.FUNDS_RELEASED,
            {
                "transfer_id": transfer_id,
                "hold_id": hold.id,
                "account_id": hold.account_id,
                "reason": reason,
                "transfer": transfer,
            },
            causation_id=event_id,
        )


def on_payout_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """The provider refused the payout: release the hold."""

    def effect(session, payload, event_id):
        transfer = payload["transfer"]
        _release(
            session,
            transfer["transfer_id"],
            contracts.REASON_PAYOUT_FAILED,
            transfer,
            event_id,
            now,
        )

    _step(uow, envelope, "accounts.on_payout_failed", effect)


def on_transfer_ended(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Completed or failed: remember it; a failure releases any hold still active."""

    def effect(session, payload, event_id):
        ledger.close(session, payload["transfer_id"], envelope["type"], now)
        if envelope["type"] == contracts.TRANSFER_FAILED:
            _release(
                session,
                payload["transfer_id"],
                payload.get("reason"),
                payload.get("transfer"),
                event_id,
                now,
            )

    _step(uow, envelope, "accounts.on_transfer_ended", effect)

"""accounts' steps in the transfer saga: one `handle_<event>` per event it acts on.

Each runs in one transaction (shared.inbox.handle_once): claim the event
in the inbox (a duplicate delivery does nothing), move the money, stage
the outcome in the outbox. Every saga event carries the transfer as
transactions accepted it, so a step needs nothing but the event.

An internal transfer is one step here: both accounts are in this ledger,
so the approval posts debit and credit in one entry (no hold). A payout
holds the funds until the provider has answered; a deposit is credited
once the card is charged.
"""

import logging
from datetime import datetime

from services.accounts import ledger
from shared import contracts
from shared.contracts import Step
from shared.database import UnitOfWork
from shared.inbox import handle_once
from shared.outbox import stage

log = logging.getLogger(__name__)

# Inbox handler names (stored with every claimed event: keep them stable).
APPROVED_HANDLER = "accounts.on_transfer_approved"
CARD_CHARGED_HANDLER = "accounts.on_card_charged"
PAYOUT_SUCCEEDED_HANDLER = "accounts.on_payout_succeeded"
PAYOUT_FAILED_HANDLER = "accounts.on_payout_failed"
TRANSFER_FAILED_HANDLER = "accounts.on_transfer_ended"


def _step_of(envelope: dict) -> Step:
    """The consumed event as a step of the transfer's history."""
    return Step(envelope["type"], envelope["occurred_at"])


def _refused(transfer, refusal: ledger.Refused, envelope: dict) -> contracts.TransferRefused:
    return contracts.TransferRefused(
        transfer_id=transfer.transfer_id,
        transfer=transfer,
        reason=refusal.reason,
        prior_step=_step_of(envelope),
    )


def handle_transfer_approved(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Risk approved an internal transfer (post it) or a payout (hold its funds)."""
    approved = contracts.TransferApproved.from_payload(envelope["payload"])
    transfer = approved.transfer
    if transfer.kind == contracts.KIND_INTERNAL:
        handle_once(uow, envelope, APPROVED_HANDLER, lambda s: _post(s, approved, envelope, now))
    elif transfer.kind == contracts.KIND_PAYOUT:
        handle_once(
            uow,
            envelope,
            APPROVED_HANDLER,
            lambda s: _reserve(s, approved, envelope, now),
            lock=ledger.transfer_lock(transfer.transfer_id),
        )


def _post(session, approved: contracts.TransferApproved, envelope: dict, now: datetime) -> None:
    transfer = approved.transfer
    outcome = ledger.post_transfer(
        session,
        transfer.transfer_id,
        transfer.from_account_id,
        transfer.to_account_id,
        transfer.amount,
        transfer.currency,
        transfer.reference,
        now,
    )
    if outcome is None:
        return  # it expired before the approval came: transactions has failed it
    event = (
        contracts.TransferPosted(
            transfer_id=transfer.transfer_id,
            transfer=transfer,
            entry_id=outcome.entry_id,
            prior_step=_step_of(envelope),
        )
        if isinstance(outcome, ledger.Posted)
        else _refused(transfer, outcome, envelope)
    )
    stage(session, event, causation_id=envelope["event_id"])


def _reserve(session, approved: contracts.TransferApproved, envelope: dict, now: datetime) -> None:
    transfer = approved.transfer
    if ledger.is_closed(session, transfer.transfer_id):
        return  # expired before the approval came: never reserve it
    outcome = ledger.place_hold(
        session,
        transfer.transfer_id,
        transfer.from_account_id,
        transfer.amount,
        transfer.currency,
        now,
    )
    if isinstance(outcome, ledger.Refused):
        event = _refused(transfer, outcome, envelope)
    else:
        event = contracts.FundsReserved(
            transfer_id=transfer.transfer_id,
            transfer=transfer,
            hold_id=outcome.hold_id,
            account_id=outcome.account_id,
            amount=outcome.amount,
            currency=outcome.currency,
            prior_step=_step_of(envelope),
        )
    stage(session, event, causation_id=envelope["event_id"])


def handle_card_charged(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Deposit: the provider collected the money; credit the customer."""
    charged = contracts.CardCharged.from_payload(envelope["payload"])
    transfer = charged.transfer

    def effect(session):
        outcome = ledger.credit_deposit(
            session,
            transfer.transfer_id,
            transfer.to_account_id,
            transfer.amount,
            transfer.currency,
            now,
        )
        if isinstance(outcome, ledger.Refused):
            # Validated when requested, so this is an account closed since:
            # the money is with us and must be refunded by an operator.
            log.error(
                "deposit charged but not credited",
                extra={"transfer_id": transfer.transfer_id, "reason": outcome.reason},
            )
            event = _refused(transfer, outcome, envelope)
        else:
            ledger.close_once(session, transfer.transfer_id, ledger.POSTED, now)
            event = contracts.DepositCredited(
                transfer_id=transfer.transfer_id,
                transfer=transfer,
                entry_id=outcome,
                prior_step=_step_of(envelope),
            )
        stage(session, event, causation_id=envelope["event_id"])

    handle_once(uow, envelope, CARD_CHARGED_HANDLER, effect)


def handle_payout_succeeded(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Payout: the beneficiary was paid; the held funds leave the account."""
    paid = contracts.PayoutSucceeded.from_payload(envelope["payload"])
    transfer = paid.transfer

    def effect(session):
        outcome = ledger.capture_payout(session, transfer.transfer_id, now)
        if isinstance(outcome, ledger.Refused):
            log.error(
                "payout sent but no active hold to capture",
                extra={"transfer_id": transfer.transfer_id},
            )
            return
        ledger.close_once(session, transfer.transfer_id, ledger.POSTED, now)
        stage(
            session,
            contracts.PayoutCaptured(
                transfer_id=transfer.transfer_id,
                transfer=transfer,
                entry_id=outcome,
                prior_step=_step_of(envelope),
            ),
            causation_id=envelope["event_id"],
        )

    handle_once(
        uow,
        envelope,
        PAYOUT_SUCCEEDED_HANDLER,
        effect,
        lock=ledger.transfer_lock(transfer.transfer_id),
    )


def _release(session, transfer, reason: str | None, envelope: dict, now: datetime) -> None:
    """The compensation: give back the hold, if one is still active, and say so."""
    released = ledger.release_hold(session, transfer.transfer_id, now)
    if released is not None:
        stage(
            session,
            contracts.FundsReleased(
                transfer_id=transfer.transfer_id,
                transfer=transfer,
                hold_id=released.hold_id,
                account_id=released.account_id,
                reason=reason,
            ),
            causation_id=envelope["event_id"],
        )


def handle_payout_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """The provider refused the payout: release the hold."""
    failed = contracts.PayoutFailed.from_payload(envelope["payload"])

    def effect(session):
        _release(session, failed.transfer, failed.reason, envelope, now)
        ledger.close_once(session, failed.transfer_id, ledger.refused_outcome(failed.reason), now)

    handle_once(
        uow, envelope, PAYOUT_FAILED_HANDLER, effect, lock=ledger.transfer_lock(failed.transfer_id)
    )


def handle_transfer_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """A payout failed (its deadline, say): release any hold still active."""
    failed = contracts.TransferFailed.from_payload(envelope["payload"])

    def effect(session):
        ledger.close_once(session, failed.transfer_id, contracts.TRANSFER_FAILED, now)
        _release(session, failed.transfer, failed.reason, envelope, now)

    handle_once(
        uow,
        envelope,
        TRANSFER_FAILED_HANDLER,
        effect,
        lock=ledger.transfer_lock(failed.transfer_id),
    )

"""risk's reviews: a transfer held for an admin, until exactly one thing closes it.

A held transfer ends in exactly one of: an admin approves or rejects it
(`decide_review`), its time runs out and it is rejected (`expire_reviews`),
or the saga fails it first, e.g. at its deadline (`withdraw_review`). Each
is a conditional update of the still-pending review, so two of them racing
(two admins, an admin and the sweep) cannot both win; the winner stages
the final verdict, which the saga continues from.
"""

import json
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.risk import domain, schemas
from services.risk.models import AccountAge, Assessment, EndedTransfer, Review
from services.risk.views import final_decision, review_by_id, review_of, review_view
from shared import audit, contracts
from shared.database import UnitOfWork, advisory_lock, claims_deferred
from shared.errors import Conflict, Forbidden
from shared.events import is_id
from shared.inbox import claim
from shared.outbox import stage

log = logging.getLogger(__name__)

PENDING, APPROVED, REJECTED, EXPIRED, WITHDRAWN = schemas.REVIEW_STATUSES
# Who decides when no admin does.
SYSTEM = "system"


def transfer_lock(transfer_id: str) -> str:
    """Serialises assessing a transfer with learning that it failed (taken
    after the account's lock, never before it)."""
    return f"risk.transfer:{transfer_id}"


def verdict(
    assessment: Assessment, transfer: Mapping, review: Review | None
) -> contracts.TransferApproved | contracts.TransferRejected:
    """The final word on a transfer, for the saga: approved or rejected (when
    it is assessed, or when its review closes)."""
    reasons = json.loads(assessment.reasons)
    extra = {}
    if review is not None:
        if review.status == EXPIRED:
            reasons = [*reasons, domain.REVIEW_EXPIRED]
        extra = {"review_id": review.review_id, "decided_by": review.decided_by}
    event = (
        contracts.TransferApproved
        if final_decision(assessment) == contracts.APPROVE
        else contracts.TransferRejected
    )
    return event(
        transfer_id=assessment.transfer_id,
        score=assessment.score,
        reasons=tuple(reasons),
        transfer=contracts.TransferDetails.from_payload(transfer),
        **extra,
    )


def _recipient(session: Session, transfer: Mapping) -> str | None:
    """Who receives an internal transfer, as far as risk knows."""
    named = transfer.get("to_owner_id")
    if is_id(named):
        return named
    if transfer.get("kind") != contracts.KIND_INTERNAL:
        return None  # a payout's IBAN names no customer of ours
    target = session.get(AccountAge, transfer.get("to_account_id"))
    return target.owner_id if target is not None else None


def hold(
    session: Session,
    assessment: Assessment,
    transfer: Mapping,
    now: datetime,
    rules: domain.RuleSet,
    event_id: str,
) -> Review:
    review = Review(
        review_id=str(uuid.uuid4()),
        transfer_id=assessment.transfer_id,
        owner_id=assessment.owner_id,
        recipient_id=_recipient(session, transfer),
        status=PENDING,
        transfer=json.dumps(dict(transfer)),
        created_at=now,
        expires_at=now + timedelta(seconds=rules.review_seconds),
    )
    session.add(review)
    session.flush()
    stage(
        session,
        contracts.TransferReviewRequested(
            transfer_id=assessment.transfer_id,
            review_id=review.review_id,
            owner_id=assessment.owner_id,
            score=assessment.score,
            reasons=tuple(json.loads(assessment.reasons)),
            expires_at=review.expires_at.isoformat(),
            transfer=contracts.TransferDetails.from_payload(transfer),
        ),
        causation_id=event_id,
    )
    return review


def _close_review(
    session: Session,
    review: Review,
    status: str,
    decided_by: str,
    note: str | None,
    now: datetime,
    announce: bool = True,
) -> bool:
    """Move a pending review to `status`; False when something else closed it first.

    The winner sets the assessment's final decision and, unless the saga
    already ended the transfer (withdrawn), stages the final verdict
    (transfer_approved or transfer_rejected).
    """
    closed = session.execute(
        update(Review)
        .where(Review.seq == review.seq, Review.status == PENDING)
        .values(status=status, decided_at=now, decided_by=decided_by, note=note)
    ).rowcount
    if closed != 1:
        return False
    session.refresh(review)
    final = contracts.APPROVE if status == APPROVED else contracts.REJECT
    assessment = session.scalar(
        select(Assessment).where(Assessment.transfer_id == review.transfer_id)
    )
    assessment.final_decision = final
    session.flush()
    if announce:
        stage(session, verdict(assessment, json.loads(review.transfer), review))
    log.info(
        "review closed",
        extra={"transfer_id": review.transfer_id, "status": status, "decided_by": decided_by},
    )
    return True


def decide_review(
    uow: UnitOfWork,
    review_id: str,
    decision: str,
    decided_by: str,
    note: str | None,
    now: datetime,
    caller: str | None = None,
) -> dict:
    """An admin approves (the saga continues) or rejects (it is compensated).

    Deciding again as already decided returns the review (a retried request);
    anything else on a closed review is a conflict. No admin decides on their
    own transfer. The decision is audited: `decided_by` as the caller (the
    broker identity that made the request) vouches for them.
    """
    status = APPROVED if decision == contracts.APPROVE else REJECTED
    with uow.commit_on_exit() as session:
        review = review_by_id(session, review_id)
        if decided_by in {review.owner_id, review.recipient_id} - {None}:
            raise Forbidden(
                "own_transfer", "Nobody decides a review of a transfer they send or receive."
            )
        if review.status == status and review.decided_by == decided_by:
            return review_view(session, review)
        if review.status != PENDING:
            raise Conflict("review_closed", f"This review is already {review.status}.")
        if review.expires_at <= now:
            raise Conflict("review_expired", "This review ran out of time; it is being rejected.")
        if not _close_review(session, review, status, decided_by, note, now):
            session.refresh(review)
            raise Conflict("review_closed", f"This review is already {review.status}.")
        audit.record(
            session,
            audit.REVIEW_DECIDED,
            subject=review.review_id,
            actor=audit.Actor(caller, decided_by),
            at=now,
            details={"decision": decision, "transfer_id": review.transfer_id, "note": note},
        )
        return review_view(session, review)


def expire_reviews(uow: UnitOfWork, now: datetime, batch: int = 100) -> int:
    """Reject the reviews nobody decided in time; returns how many."""
    with uow.commit_on_exit() as session:
        due = session.scalars(
            select(Review.seq)
            .where(Review.status == PENDING, Review.expires_at <= now)
            .order_by(Review.expires_at, Review.seq)
            .limit(batch)
        ).all()
    # One transaction per review: one that cannot be closed does not hold the
    # others back, and two instances sweeping at once never each hold locks
    # on several rows (they could deadlock).
    expired = 0
    for seq in due:
        with uow.commit_on_exit() as session:
            review = session.get(Review, seq)
            expired += _close_review(session, review, EXPIRED, SYSTEM, "not decided in time", now)
    if expired:
        log.info("reviews expired", extra={"count": expired})
    return expired


@claims_deferred
def withdraw_review(uow: UnitOfWork, envelope: dict, inbox_handler: str, now: datetime) -> None:
    """The saga failed a held transfer (at its deadline, say): close its review."""
    payload = envelope["payload"]
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, inbox_handler):
            return
        transfer_id = payload.get("transfer_id")
        if not is_id(transfer_id):
            raise ValueError(f"transfer_failed without a usable transfer_id: {transfer_id!r}")
        reason = str(payload.get("reason") or "failed")[:100]
        advisory_lock(session, transfer_lock(transfer_id))
        review = review_of(session, transfer_id)
        assessed = session.scalar(
            select(Assessment.id).where(Assessment.transfer_id == transfer_id)
        )
        if assessed is None:
            # Failed before risk saw it: remember, so it is never held later.
            session.merge(EndedTransfer(transfer_id=transfer_id, reason=reason, ended_at=now))
        elif review is not None and review.status == PENDING:
            _close_review(session, review, WITHDRAWN, SYSTEM, f"transfer {reason}", now, False)

"""risk's read views: assessments and reviews as admins and operators see them."""

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.risk.models import Assessment, Review
from shared.database import UnitOfWork
from shared.errors import NotFound


def final_decision(assessment: Assessment) -> str:
    return assessment.final_decision or assessment.decision


def review_of(session: Session, transfer_id: str) -> Review | None:
    return session.scalar(select(Review).where(Review.transfer_id == transfer_id))


def review_by_id(session: Session, review_id: str) -> Review:
    review = session.scalar(select(Review).where(Review.review_id == review_id))
    if review is None:
        raise NotFound("review_not_found", "No such review.")
    return review


def review_view(session: Session, review: Review, assessment: Assessment | None = None) -> dict:
    """A review with its transfer's assessment (looked up unless given)."""
    if assessment is None:
        assessment = session.scalar(
            select(Assessment).where(Assessment.transfer_id == review.transfer_id)
        )
    return {
        "review_id": review.review_id,
        "transfer_id": review.transfer_id,
        "kind": assessment.kind,
        "owner_id": review.owner_id,
        "recipient_id": review.recipient_id,
        "account_id": assessment.account_id,
        "amount": assessment.amount,
        "currency": assessment.currency,
        "score": assessment.score,
        "reasons": json.loads(assessment.reasons),
        "signals": json.loads(assessment.signals),
        "status": review.status,
        "created_at": review.created_at.isoformat(),
        "expires_at": review.expires_at.isoformat(),
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "decided_by": review.decided_by,
        "note": review.note,
    }


def get_review(uow: UnitOfWork, review_id: str) -> dict:
    with uow.commit_on_exit() as session:
        review = review_by_id(session, review_id)
        return review_view(session, review)


def list_reviews(
    uow: UnitOfWork, status: str = "pending", limit: int = 50, cursor: int | None = None
) -> dict:
    """Reviews newest first (all, or in one status), keyset-paginated."""
    query = (
        select(Review, Assessment)
        .join(Assessment, Assessment.transfer_id == Review.transfer_id)
        .order_by(Review.seq.desc())
        .limit(limit)
    )
    if status != "all":
        query = query.where(Review.status == status)
    if cursor is not None:
        query = query.where(Review.seq < cursor)
    with uow.commit_on_exit() as session:
        rows = session.execute(query).all()
        return {
            "items": [review_view(session, review, assessment) for review, assessment in rows],
            "next_cursor": str(rows[-1][0].seq) if len(rows) == limit else None,
        }


def assessment_view(assessment: Assessment, review: Review | None) -> dict:
    return {
        "transfer_id": assessment.transfer_id,
        "kind": assessment.kind,
        "owner_id": assessment.owner_id,
        "account_id": assessment.account_id,
        "beneficiary": assessment.beneficiary,
        "amount": assessment.amount,
        "currency": assessment.currency,
        "decision": assessment.decision,
        "final_decision": final_decision(assessment),
        "score": assessment.score,
        "reasons": json.loads(assessment.reasons),
        "signals": json.loads(assessment.signals),
        "tier": assessment.tier,
        "rules_version": assessment.rules_version,
        "assessed_at": assessment.assessed_at.isoformat(),
        "review_id": review.review_id if review else None,
    }


def get_assessment(uow: UnitOfWork, transfer_id: str) -> dict:
    with uow.commit_on_exit() as session:
        assessment = session.scalar(select(Assessment).where(Assessment.transfer_id == transfer_id))
        if assessment is None:
            raise NotFound("assessment_not_found", "No assessment for this transfer.")
        return assessment_view(assessment, review_of(session, transfer_id))


def list_assessments(
    uow: UnitOfWork,
    account_id: str | None = None,
    owner_id: str | None = None,
    decision: str | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> dict:
    """Assessments newest first, filtered, keyset-paginated."""
    query = (
        select(Assessment, Review)
        .outerjoin(Review, Review.transfer_id == Assessment.transfer_id)
        .order_by(Assessment.id.desc())
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(Assessment.account_id == account_id)
    if owner_id is not None:
        query = query.where(Assessment.owner_id == owner_id)
    if decision is not None:
        query = query.where(Assessment.decision == decision)
    if cursor is not None:
        query = query.where(Assessment.id < cursor)
    with uow.commit_on_exit() as session:
        rows = session.execute(query).all()
        return {
            "items": [assessment_view(assessment, review) for assessment, review in rows],
            "next_cursor": str(rows[-1][0].id) if len(rows) == limit else None,
        }

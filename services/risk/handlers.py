"""risk's use cases: assess transfers, remember account ages, answer queries.

A transfer is decided once. The assessment runs in one transaction: claim
the event in the inbox (a duplicate delivery does nothing), re-use the
transfer's assessment if it already has one (a second request for the same
transfer gets the same decision again, never a new one), otherwise judge
it, store the decision and stage `transfer_assessed` in the outbox.

Velocity counts what is committed, so two transfers from one account
assessed at the same moment could both squeeze under the daily count. On
PostgreSQL each assessment therefore takes a transaction-scoped advisory
lock on its source account; on SQLite the process's single connection
already serialises them.
"""

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.risk import domain
from services.risk.models import AccountAge, Assessment
from shared import contracts
from shared.database import UnitOfWork
from shared.errors import NotFound
from shared.inbox import claim
from shared.outbox import record_event

log = logging.getLogger(__name__)

# Inbox handler names: "<service>.<step>".
ASSESS_HANDLER = "risk.assess_transfer"
ACCOUNT_OPENED_HANDLER = "risk.record_account_opened"


class MalformedTransfer(ValueError):
    """A transfer_requested that cannot be assessed: a producer bug, parked for a human."""


def _view(assessment: Assessment) -> dict:
    return {
        "transfer_id": assessment.transfer_id,
        "kind": assessment.kind,
        "account_id": assessment.account_id,
        "amount": assessment.amount,
        "currency": assessment.currency,
        "decision": assessment.decision,
        "score": assessment.score,
        "reasons": json.loads(assessment.reasons),
        "assessed_at": assessment.assessed_at.isoformat(),
    }


def _checked(transfer: Mapping) -> tuple[str, str, int, str]:
    transfer_id = transfer.get("transfer_id")
    account_id = transfer.get("from_account_id")
    amount = transfer.get("amount")
    currency = transfer.get("currency")
    if not (isinstance(transfer_id, str) and 0 < len(transfer_id) <= 36):
        raise MalformedTransfer(f"transfer_id {transfer_id!r}")
    if not (isinstance(account_id, str) and 0 < len(account_id) <= 36):
        raise MalformedTransfer(f"transfer {transfer_id}: from_account_id {account_id!r}")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise MalformedTransfer(f"transfer {transfer_id}: amount {amount!r}")
    if not (isinstance(currency, str) and len(currency) == 3):
        raise MalformedTransfer(f"transfer {transfer_id}: currency {currency!r}")
    return transfer_id, account_id, amount, currency


def _lock_account(session: Session, account_id: str) -> None:
    """Serialise assessments of one source account until this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"risk.velocity:{account_id}"},
        )


def _velocity(
    session: Session, account_id: str, currency: str, now: datetime, limits: domain.RiskLimits
) -> domain.Velocity:
    count, total = session.execute(
        select(func.count(), func.coalesce(func.sum(Assessment.amount), 0)).where(
            Assessment.account_id == account_id,
            Assessment.currency == currency,
            Assessment.decision == contracts.APPROVE,
            Assessment.assessed_at > now - limits.velocity_window,
        )
    ).one()
    return domain.Velocity(count=int(count), total=int(total))


def assess_transfer(
    uow: UnitOfWork, envelope: dict, now: datetime, limits: domain.RiskLimits | None = None
) -> dict | None:
    """Decide on an internal transfer or a payout and announce the decision.

    Returns the assessment, or None for a deposit (not assessed) and for a
    duplicate delivery of an event already handled.
    """
    transfer = envelope["payload"]
    if not domain.is_assessed(transfer.get("kind")):
        return None
    transfer_id, account_id, amount, currency = _checked(transfer)
    limits = limits or domain.RiskLimits.from_env()
    with uow.transaction() as session:
        if not claim(session, envelope, ASSESS_HANDLER):
            return None
        _lock_account(session, account_id)
        assessment = session.scalar(select(Assessment).where(Assessment.transfer_id == transfer_id))
        if assessment is None:
            age = session.get(AccountAge, account_id)
            decision = domain.assess(
                amount=amount,
                currency=currency,
                account_opened_at=age.opened_at if age else None,
                velocity=_velocity(session, account_id, currency, now, limits),
                now=now,
                limits=limits,
            )
            assessment = Assessment(
                transfer_id=transfer_id,
                kind=transfer["kind"],
                account_id=account_id,
                amount=amount,
                currency=currency,
                decision=decision.decision,
                score=decision.score,
                reasons=json.dumps(list(decision.reasons)),
                event_id=envelope["event_id"],
                assessed_at=now,
            )
            session.add(assessment)
            session.flush()  # the unique transfer_id refuses a second decision here
        else:
            log.info(
                "transfer assessed before; repeating its decision",
                extra={"transfer_id": transfer_id, "decision": assessment.decision},
            )
        view = _view(assessment)
        record_event(
            session,
            contracts.TRANSFER_ASSESSED,
            {
                "transfer_id": transfer_id,
                "decision": view["decision"],
                "score": view["score"],
                "reasons": view["reasons"],
                "transfer": transfer,
            },
            causation_id=envelope["event_id"],
        )
    if view["decision"] != contracts.APPROVE:
        log.info(
            "transfer rejected",
            extra={"transfer_id": transfer_id, "score": view["score"], "reasons": view["reasons"]},
        )
    return view


def _opened_at(envelope: dict, now: datetime) -> datetime:
    """When the account was opened: the event's occurred_at, if it is usable."""
    try:
        occurred = datetime.fromisoformat(envelope["occurred_at"])
    except (KeyError, TypeError, ValueError):
        return now
    return occurred if occurred.tzinfo is not None else now


def record_account_opened(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Remember when an account was opened (the first report wins)."""
    payload = envelope["payload"]
    account_id = payload.get("account_id")
    if not (isinstance(account_id, str) and 0 < len(account_id) <= 36):
        raise ValueError(f"account_opened without a usable account_id: {account_id!r}")
    with uow.transaction() as session:
        if not claim(session, envelope, ACCOUNT_OPENED_HANDLER):
            return
        if session.get(AccountAge, account_id) is None:
            session.add(
                AccountAge(
                    account_id=account_id,
                    owner_id=payload.get("owner_id"),
                    currency=payload.get("currency"),
                    opened_at=_opened_at(envelope, now),
                    recorded_at=now,
                )
            )


def get_assessment(uow: UnitOfWork, transfer_id: str) -> dict:
    with uow.transaction() as session:
        assessment = session.scalar(select(Assessment).where(Assessment.transfer_id == transfer_id))
        if assessment is None:
            raise NotFound("assessment_not_found", "No assessment for this transfer.")
        return _view(assessment)


def list_assessments(uow: UnitOfWork, account_id: str | None = None, limit: int = 50) -> list[dict]:
    """The newest assessments first, of one source account or of all."""
    query = select(Assessment).order_by(Assessment.id.desc()).limit(limit)
    if account_id is not None:
        query = query.where(Assessment.account_id == account_id)
    with uow.transaction() as session:
        return [_view(assessment) for assessment in session.scalars(query)]

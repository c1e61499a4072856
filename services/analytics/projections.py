"""analytics' projections: log each transfer outcome and project it; rebuild from the log.

Consuming an event is one transaction: claim it in the inbox (a duplicate
delivery does nothing), append the envelope to `analytics_events`, and
project it. Projecting is a function of the log alone (the event, its
position, and what earlier positions projected), so `rebuild` can drop the
projections and replay the log into the same rows.

Anomalies compare an outflow with the user's earlier outflows, "earlier"
meaning a lower log position. On PostgreSQL each event therefore takes a
transaction-scoped advisory lock on every user it touches before it takes
its position, so one user's events commit in position order and a replay
sees exactly the history the live handler saw. (SQLite's single connection
per process already serialises everything.)
"""

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from services.analytics import domain
from services.analytics.models import (
    PROJECTIONS,
    AnalyticsEvent,
    FlaggedTransfer,
    MonthlyCategory,
    MonthlyTotal,
    ProjectedTransfer,
    TransferTotal,
    UserFlow,
)
from shared import contracts
from shared.database import (
    UnitOfWork,
    advisory_lock,
    claim_once,
    claims_deferred,
    defer_rows,
    query,
    upsert_adding,
)
from shared.events import event_time, is_id
from shared.inbox import claim
from shared.money import is_supported_currency

log = logging.getLogger(__name__)

COMPLETED = "completed"
FAILED = "failed"
_OUTCOMES = {contracts.TRANSFER_COMPLETED: COMPLETED, contracts.TRANSFER_FAILED: FAILED}

_REPLAY_BATCH = 500


class MalformedEvent(ValueError):
    """An event analytics cannot use: a producer bug, parked for a human."""


# -- reading payloads --------------------------------------------------------------


def _id(value, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not is_id(value):
        raise MalformedEvent(f"{name} {value!r}")
    return value


def _amount(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MalformedEvent(f"amount {value!r}")
    return value


def _currency(value) -> str:
    if not (isinstance(value, str) and is_supported_currency(value)):
        raise MalformedEvent(f"currency {value!r}")
    return value


def _text(value, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def completed_transfer(payload: Mapping) -> domain.CompletedTransfer:
    """A transfer_completed payload (its `transfer` is the original request)."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"payload {payload!r}")
    request = payload.get("transfer") if isinstance(payload.get("transfer"), Mapping) else {}
    kind = payload.get("kind", request.get("kind"))
    if kind not in domain.KINDS:
        raise MalformedEvent(f"kind {kind!r}")
    beneficiary = (
        request.get("beneficiary") if isinstance(request.get("beneficiary"), Mapping) else {}
    )
    return domain.CompletedTransfer(
        transfer_id=_id(payload.get("transfer_id"), "transfer_id"),
        kind=kind,
        owner_id=_id(payload.get("owner_id", request.get("owner_id")), "owner_id"),
        to_owner_id=_id(payload.get("to_owner_id"), "to_owner_id", optional=True),
        amount=_amount(payload.get("amount", request.get("amount"))),
        currency=_currency(payload.get("currency", request.get("currency"))),
        reference=_text(request.get("reference", payload.get("reference")), 500),
        from_account_id=_id(request.get("from_account_id"), "from_account_id", optional=True),
        to_account_id=_id(request.get("to_account_id"), "to_account_id", optional=True),
        beneficiary_iban=_text(beneficiary.get("iban"), 34),
    )


def failed_transfer(payload: Mapping) -> tuple[str, str, int, str, str]:
    """(transfer_id, kind, amount, currency, reason) of a transfer_failed payload."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"payload {payload!r}")
    request = payload.get("transfer") if isinstance(payload.get("transfer"), Mapping) else {}
    kind = payload.get("kind", request.get("kind"))
    if not (isinstance(kind, str) and 0 < len(kind) <= 16):
        raise MalformedEvent(f"kind {kind!r}")
    return (
        _id(payload.get("transfer_id"), "transfer_id"),
        kind,
        _amount(payload.get("amount", request.get("amount"))),
        _currency(payload.get("currency", request.get("currency"))),
        _text(payload.get("reason"), 64) or "unknown",
    )


# -- consuming -----------------------------------------------------------------------


def _lock_users(session: Session, user_ids: set[str]) -> None:
    """Serialise the events of these users until this transaction ends."""
    # One order everywhere: no deadlocks.
    advisory_lock(session, *(f"analytics.user:{user_id}" for user_id in sorted(user_ids)))


@claims_deferred
def record_event(
    uow: UnitOfWork,
    envelope: dict,
    inbox_handler: str,
    now: datetime,
    settings: domain.AnomalySettings,
    source: str = contracts.TRANSACTIONS,
) -> bool:
    """Log and project one transfer outcome; False for a duplicate delivery."""
    if not isinstance(envelope, Mapping):
        raise MalformedEvent(f"envelope {envelope!r}")
    event_type = envelope.get("type")
    payload = envelope.get("payload")
    if event_type == contracts.TRANSFER_COMPLETED:
        transfer = completed_transfer(payload)
        users = {transfer.owner_id} | ({transfer.to_owner_id} if transfer.to_owner_id else set())
    elif event_type == contracts.TRANSFER_FAILED:
        failed_transfer(payload)
        users = set()
    else:
        raise MalformedEvent(f"event type {event_type!r}")
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, inbox_handler):
            return False
        _lock_users(session, users)
        occurred_at = event_time(envelope, now)  # decides its month
        position = query(
            session,
            _LOG_EVENT,
            {
                "event_id": envelope["event_id"],
                "event_type": event_type,
                "source": source,
                "occurred_at": occurred_at,
                "received_at": now,
                "body": json.dumps(envelope, sort_keys=True),
            },
        ).scalar_one()
        project(session, position, event_type, payload, occurred_at, settings)
    return True


def project(
    session: Session,
    position: int,
    event_type: str,
    payload: Mapping,
    occurred_at: datetime,
    settings: domain.AnomalySettings,
) -> None:
    """Fold one logged event into the projections (live and on replay)."""
    outcome = _OUTCOMES[event_type]
    transfer_id = payload["transfer_id"]
    if not claim_once(
        session,
        ProjectedTransfer.__table__,
        {"transfer_id": transfer_id, "outcome": outcome, "position": position},
    ):
        log.warning(
            "transfer outcome announced again; counted once",
            extra={"transfer_id": transfer_id, "again": outcome},
        )
        return
    if outcome == FAILED:
        _, kind, amount, currency, reason = failed_transfer(payload)
        _add(session, TransferTotal, (FAILED, kind, currency, reason), count=1, amount=amount)
        return
    transfer = completed_transfer(payload)
    _add(
        session,
        TransferTotal,
        (COMPLETED, transfer.kind, transfer.currency, ""),
        count=1,
        amount=transfer.amount,
    )
    month = domain.month_of(occurred_at)
    flows = domain.flows(transfer)
    for flow in flows:
        if flow.direction == domain.OUT and domain.is_spending(flow.category):
            # Judged against the user's earlier flows (positions before this one).
            _judge(session, transfer.transfer_id, flow, position, month, occurred_at, settings)
    defer_rows(
        session,
        _FLOWS,
        [
            {
                "transfer_id": transfer.transfer_id,
                "user_id": flow.user_id,
                "direction": flow.direction,
                "position": position,
                "kind": transfer.kind,
                "amount": flow.amount,
                "currency": flow.currency,
                "category": flow.category,
                "counterparty": flow.counterparty and flow.counterparty[:80],
                "reference": flow.reference,
                "month": month,
                "occurred_at": occurred_at,
            }
            for flow in flows
        ],
    )
    for part in domain.contributions(flows):
        increments = {"inflow": part.inflow, "outflow": part.outflow, "count": part.count}
        _add(session, MonthlyTotal, (part.user_id, month, part.currency), **increments)
        _add(
            session,
            MonthlyCategory,
            (part.user_id, month, part.currency, part.category),
            **increments,
        )


def _judge(
    session: Session,
    transfer_id: str,
    flow: domain.Flow,
    position: int,
    month: str,
    occurred_at: datetime,
    settings: domain.AnomalySettings,
) -> None:
    """Flag the outflow if it is far above the user's earlier outflows."""
    earlier = [
        amount
        for (amount,) in query(
            session,
            _EARLIER_OUTFLOWS,
            {
                "user_id": flow.user_id,
                "currency": flow.currency,
                "position": position,
                "history": settings.history,
            },
        )
    ]
    anomaly = domain.detect_anomaly(flow.amount, flow.currency, earlier[::-1], settings)
    if anomaly is None:
        return
    session.add(
        FlaggedTransfer(
            transfer_id=transfer_id,
            user_id=flow.user_id,
            position=position,
            amount=flow.amount,
            currency=flow.currency,
            usual_amount=anomaly.median,
            score=anomaly.score,
            reason=anomaly.reason,
            month=month,
            occurred_at=occurred_at,
        )
    )
    log.info(
        "unusual outflow flagged",
        extra={"transfer_id": transfer_id, "score": anomaly.score},
    )


_EVENTS = AnalyticsEvent.__table__
_FLOWS = UserFlow.__table__
_LOG_EVENT = _EVENTS.insert().returning(_EVENTS.c.position)
_EARLIER_OUTFLOWS = (
    select(_FLOWS.c.amount)
    .where(
        _FLOWS.c.user_id == bindparam("user_id"),
        _FLOWS.c.currency == bindparam("currency"),
        _FLOWS.c.direction == domain.OUT,
        _FLOWS.c.category != domain.OWN_TRANSFER,
        _FLOWS.c.position < bindparam("position"),
    )
    .order_by(_FLOWS.c.position.desc())
    .limit(bindparam("history"))
)


def _add(session: Session, model, key: tuple, **increments: int) -> None:
    """Insert the row or add the increments to it, in one statement."""
    columns = [column.name for column in model.__table__.primary_key.columns]
    upsert_adding(session, model.__table__, dict(zip(columns, key, strict=True)), increments)


# -- rebuilding ------------------------------------------------------------------------


def rebuild(uow: UnitOfWork, settings: domain.AnomalySettings) -> dict:
    """Drop every projection and replay analytics_events from position zero.

    One transaction: readers see the old projections until it commits. On
    PostgreSQL new events wait for it (their handlers retry if the wait
    exceeds the lock timeout), so nothing is projected twice or missed.
    """
    events = 0
    with uow.commit_on_exit() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("LOCK TABLE analytics_events IN EXCLUSIVE MODE"))
        for model in PROJECTIONS:
            session.execute(delete(model))
        last = 0
        while True:
            rows = session.execute(
                select(
                    AnalyticsEvent.position,
                    AnalyticsEvent.event_type,
                    AnalyticsEvent.occurred_at,
                    AnalyticsEvent.body,
                )
                .where(AnalyticsEvent.position > last)
                .order_by(AnalyticsEvent.position)
                .limit(_REPLAY_BATCH)
            ).all()
            if not rows:
                break
            for row in rows:
                envelope = json.loads(row.body)
                project(
                    session, row.position, row.event_type, envelope["payload"],
                    row.occurred_at, settings,
                )  # fmt: skip
            session.flush()
            session.expunge_all()  # keep the identity map small on long logs
            last = rows[-1].position
            events += len(rows)
        transfers = session.scalar(select(func.count()).select_from(ProjectedTransfer))
    log.info("projections rebuilt", extra={"events": events, "transfers": transfers})
    return {"events": events, "transfers": transfers}

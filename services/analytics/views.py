"""analytics' read views: a user's month, insights and flagged outflows."""

from datetime import date

from sqlalchemy import func, select

from services.analytics import domain
from services.analytics.models import FlaggedTransfer, MonthlyCategory, MonthlyTotal, UserFlow
from shared.database import UnitOfWork

_MAX_OUTFLOWS = 5000  # outflows read for insights (the lookback window's newest)


def _totals(inflow: int, outflow: int, count: int) -> dict:
    return {"inflow": inflow, "outflow": outflow, "net": inflow - outflow, "count": count}


def summary(uow: UnitOfWork, user_id: str, month: str) -> dict:
    """The user's month per currency, amounts in minor units."""
    with uow.commit_on_exit() as session:
        totals = session.scalars(
            select(MonthlyTotal)
            .where(MonthlyTotal.user_id == user_id, MonthlyTotal.month == month)
            .order_by(MonthlyTotal.currency)
        ).all()
        categories = session.scalars(
            select(MonthlyCategory)
            .where(MonthlyCategory.user_id == user_id, MonthlyCategory.month == month)
            .order_by(MonthlyCategory.currency, MonthlyCategory.category)
        ).all()
    currencies = {
        row.currency: {**_totals(row.inflow, row.outflow, row.count), "by_category": {}}
        for row in totals
    }
    for row in categories:
        currencies[row.currency]["by_category"][row.category] = _totals(
            row.inflow, row.outflow, row.count
        )
    return {"month": month, "currencies": currencies}


def insights(
    uow: UnitOfWork, user_id: str, today: date, settings: domain.InsightSettings | None = None
) -> list[dict]:
    settings = settings or domain.InsightSettings()
    month = domain.month_of(today)
    last = domain.previous_month(month)
    first = domain.shift_month(month, -(settings.recurring_lookback_months - 1))
    with uow.commit_on_exit() as session:
        spending_rows = session.execute(
            select(
                MonthlyCategory.month, MonthlyCategory.currency, func.sum(MonthlyCategory.outflow)
            )
            .where(
                MonthlyCategory.user_id == user_id,
                MonthlyCategory.month.in_([month, last]),
                MonthlyCategory.category != domain.OWN_TRANSFER,
            )
            .group_by(MonthlyCategory.month, MonthlyCategory.currency)
        ).all()
        flows = session.scalars(
            select(UserFlow)
            .where(
                UserFlow.user_id == user_id,
                UserFlow.direction == domain.OUT,
                UserFlow.category != domain.OWN_TRANSFER,
                UserFlow.month >= first,
                UserFlow.month <= month,
            )
            .order_by(UserFlow.position.desc())
            .limit(_MAX_OUTFLOWS)
        ).all()
    spending = {(m, currency): int(total or 0) for m, currency, total in spending_rows}
    outflows = [
        domain.Outflow(
            transfer_id=flow.transfer_id,
            month=flow.month,
            amount=flow.amount,
            currency=flow.currency,
            category=flow.category,
            reference=flow.reference,
            counterparty=flow.counterparty,
            position=flow.position,
        )
        for flow in reversed(flows)
    ]
    return [insight.as_dict() for insight in domain.insights(month, spending, outflows, settings)]


def anomalies(uow: UnitOfWork, user_id: str, limit: int = 50) -> list[dict]:
    """The user's flagged outflows, newest first."""
    with uow.commit_on_exit() as session:
        rows = session.scalars(
            select(FlaggedTransfer)
            .where(FlaggedTransfer.user_id == user_id)
            .order_by(FlaggedTransfer.position.desc())
            .limit(limit)
        ).all()
    return [
        {
            "transfer_id": row.transfer_id,
            "score": row.score,
            "reason": row.reason,
            "amount": row.amount,
            "currency": row.currency,
            "usual_amount": row.usual_amount,
            "month": row.month,
            "occurred_at": row.occurred_at.isoformat(),
        }
        for row in rows
    ]

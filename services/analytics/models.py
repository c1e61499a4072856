"""analytics' tables: the log of every event it consumed, and the projections.

`analytics_events` is append-only and the source of truth: every
projection below is a function of it, replayed in `position` order
(`handlers.rebuild`). The inbox makes each event count once per handler.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.inbox import inbox_table
from shared.models import BigId, service_base
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class AnalyticsEvent(Base):
    """Every envelope consumed, in the order analytics handled it."""

    __tablename__ = "analytics_events"

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(50))  # the producing service
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)  # decides the month
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    body: Mapped[str] = mapped_column(Text)  # the envelope, JSON


# -- projections (dropped and rebuilt by replaying analytics_events) --------------


class ProjectedTransfer(Base):
    """A transfer's outcome counts once, even if announced twice."""

    __tablename__ = "projected_transfers"

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))  # completed | failed
    position: Mapped[int] = mapped_column(BigInteger)


class MonthlyTotal(Base):
    """Per user, month and currency."""

    __tablename__ = "monthly_totals"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    inflow: Mapped[int] = mapped_column(BigInteger)
    outflow: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)


class MonthlyCategory(Base):
    """Per user, month, currency and category."""

    __tablename__ = "monthly_categories"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    inflow: Mapped[int] = mapped_column(BigInteger)
    outflow: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)


class UserFlow(Base):
    """Each completed transfer as money in or out for each user it touched."""

    __tablename__ = "flows"
    __table_args__ = (
        CheckConstraint("direction IN ('in', 'out')", name="direction_known"),
        # Anomaly history: a user's earlier outflows in a currency.
        Index("ix_flows_history", "user_id", "currency", "direction", "position"),
        Index("ix_flows_user_month", "user_id", "month"),
    )

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    direction: Mapped[str] = mapped_column(String(3), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)  # of its event in analytics_events
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    category: Mapped[str] = mapped_column(String(32))
    counterparty: Mapped[str | None] = mapped_column(String(80))
    reference: Mapped[str | None] = mapped_column(Text)
    month: Mapped[str] = mapped_column(String(7))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FlaggedTransfer(Base):
    """An outflow far above the user's usual ones (see domain.detect_anomaly)."""

    __tablename__ = "anomalies"
    __table_args__ = (Index("ix_anomalies_user_recent", "user_id", "position"),)

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    usual_amount: Mapped[int] = mapped_column(BigInteger)  # the median of the history
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    month: Mapped[str] = mapped_column(String(7))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransferTotal(Base):
    """Business totals for Prometheus: transfers and volume by outcome, kind,
    currency and failure reason ("" for completed ones)."""

    __tablename__ = "transfer_totals"

    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units


PROJECTIONS = (
    ProjectedTransfer,
    MonthlyTotal,
    MonthlyCategory,
    UserFlow,
    FlaggedTransfer,
    TransferTotal,
)

inbox = inbox_table(metadata)

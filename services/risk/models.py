"""risk's tables: one assessment per transfer, the age of each account seen.

Velocity is computed from `assessments` itself (approved transfers of an
account within the window), so there is no counter to keep in step.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.inbox import inbox_table
from shared.models import BigId, service_metadata
from shared.outbox import outbox_table
from shared.sqltypes import UtcDateTime

metadata = service_metadata()


class Base(DeclarativeBase):
    metadata = metadata


class Assessment(Base):
    """The decision on one transfer: made once, whatever the deliveries."""

    __tablename__ = "assessments"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
        CheckConstraint("decision IN ('approve', 'review', 'reject')", name="decision_known"),
        # Velocity: an account's assessments within the window.
        Index("ix_assessments_account_window", "account_id", "assessed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transfer_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str] = mapped_column(String(36))  # the source account
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(String(3))
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[str] = mapped_column(Text)  # a JSON list of reason codes
    event_id: Mapped[str] = mapped_column(String(36))  # the transfer_requested assessed
    assessed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AccountAge(Base):
    """When an account was opened, from accounts' account_opened events.

    Accounts opened before risk listened have no row: their age is unknown
    and they are not treated as new.
    """

    __tablename__ = "account_ages"

    account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(36))
    currency: Mapped[str | None] = mapped_column(String(3))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

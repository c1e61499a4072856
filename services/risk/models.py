"""risk's tables.

- assessments: one decision per transfer, with the figures behind it.
  Velocity, known beneficiaries and each customer's usual hours and amounts
  are all computed from it, so there is no counter to keep in step.
- reviews: the transfers held for an admin's decision.
- rule_sets: every version of the rules, immutable; the highest is in force.
- customers: each customer's tier (absent: the rules' default tier).
- login_failures: auth's failed logins, which raise a customer's risk.
- ended_transfers: transfers failed before risk assessed them.
- account_ages: when each account was opened.
- audit_entries: rule and tier changes and review decisions, with who made
  them (shared/audit.py).
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import audit_table
from shared.inbox import inbox_table
from shared.models import BigId, service_base
from shared.outbox import outbox_table
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class Assessment(Base):
    """The decision on one transfer: made once, whatever the deliveries."""

    __tablename__ = "assessments"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
        CheckConstraint("decision IN ('approve', 'review', 'reject')", name="decision_known"),
        # Velocity: an account's assessments within the window.
        Index("ix_assessments_account_window", "account_id", "assessed_at"),
        # A customer's history and known beneficiaries.
        Index("ix_assessments_owner", "owner_id", "id"),
        Index("ix_assessments_owner_beneficiary", "owner_id", "beneficiary"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transfer_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str] = mapped_column(String(36))  # the source account
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(String(3))
    decision: Mapped[str] = mapped_column(String(16))  # the engine's
    score: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[str] = mapped_column(Text)  # a JSON list of reason codes
    event_id: Mapped[str] = mapped_column(String(36))  # the transfer_requested assessed
    assessed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The customer, and who is paid: "account:<id>" or "iban:<IBAN>".
    owner_id: Mapped[str | None] = mapped_column(String(36))
    beneficiary: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(32))
    rules_version: Mapped[int] = mapped_column(Integer, server_default="0")
    # approve | reject, or review while an admin has not decided; velocity
    # counts approve and review, history and known beneficiaries approve.
    # NULL (rows written before it existed) means the same as `decision`.
    final_decision: Mapped[str | None] = mapped_column(String(16))
    signals: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: the figures


class Review(Base):
    """A transfer held until an admin approves or rejects it, or time runs out."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired', 'withdrawn')",
            name="status_known",
        ),
        Index("ix_reviews_status_expires", "status", "expires_at"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)  # the cursor
    review_id: Mapped[str] = mapped_column(String(36), unique=True)
    transfer_id: Mapped[str] = mapped_column(String(36), unique=True)
    owner_id: Mapped[str | None] = mapped_column(String(36))
    # Who is paid, when risk knows (an internal transfer's receiving owner).
    recipient_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    transfer: Mapped[str] = mapped_column(Text)  # JSON: the request, for the decision's event
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(36))  # an admin's user id, or "system"
    note: Mapped[str | None] = mapped_column(Text)


class RuleSetVersion(Base):
    """One version of the rules, never changed once written."""

    __tablename__ = "rule_sets"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)  # JSON, as an admin sent it (normalised)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)


class Customer(Base):
    __tablename__ = "customers"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))


class EndedTransfer(Base):
    """A transfer the saga failed before risk assessed it (events from two
    services arrive in no guaranteed order): it is never held for review."""

    __tablename__ = "ended_transfers"

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(100))
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LoginFailure(Base):
    """One failed login reported by auth (a wrong password or TOTP code)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_user_time", "user_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36))
    factor: Mapped[str | None] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_id: Mapped[str] = mapped_column(String(36))


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
audit = audit_table(metadata)

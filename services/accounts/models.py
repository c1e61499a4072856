"""accounts' tables: accounts, cached balances and the double-entry ledger.

Balances are derived from postings; `balances` caches them and is only ever
changed in the same transaction as the postings or holds that move it. Its
CHECK constraint is the last line against overdraft: even a bug cannot make
a customer account's available balance negative.
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.inbox import inbox_table
from shared.models import BigId, service_base
from shared.outbox import outbox_table
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Balance(Base):
    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("allow_negative OR balance - held >= 0", name="no_overdraft"),
    )

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JournalEntry(Base):
    """One movement of money; its postings sum to zero per currency."""

    __tablename__ = "journal_entries"
    # A transfer is posted at most once per kind of entry, whatever the
    # delivery count of the event that asked for it.
    __table_args__ = (UniqueConstraint("transfer_id", "kind", name="uq_journal_transfer_kind"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    transfer_id: Mapped[str | None] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16), server_default="adjustment")
    description: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Posting(Base):
    __tablename__ = "postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_postings_account_history", "account_id", "id"),
        # The daily report reads one day's postings.
        Index("ix_postings_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Hold(Base):
    """Funds reserved for a transfer: captured or released exactly once."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("transfer_id", "account_id", name="uq_holds_transfer_account"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    transfer_id: Mapped[str] = mapped_column(String(36))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ClosedTransfer(Base):
    """A transfer that reached its end here: late saga steps for it are ignored."""

    __tablename__ = "closed_transfers"

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32))
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReconciliationRun(Base):
    """One pass of the reconciler: what it checked, and how it ended."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (Index("ix_reconciliation_runs_started", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # incremental | full
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | operator
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked: Mapped[str] = mapped_column(Text, default="{}")  # JSON: counts and ranges
    found: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))


class Discrepancy(Base):
    """Something that does not add up, open until it is cleared or resolved.

    `fingerprint` (kind and subject) keeps one open row per problem however
    many runs see it.
    """

    __tablename__ = "reconciliation_discrepancies"
    __table_args__ = (
        Index("ix_discrepancies_status_kind", "status", "kind"),
        Index(
            "uq_discrepancies_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # open | cleared | resolved
    transfer_id: Mapped[str | None] = mapped_column(String(36))
    account_id: Mapped[str | None] = mapped_column(String(36))
    entry_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    first_run_id: Mapped[str] = mapped_column(String(36))
    last_run_id: Mapped[str] = mapped_column(String(36))
    found_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(500))


class ReconciliationCursor(Base):
    """Where the incremental checks go on from (and the lease on running)."""

    __tablename__ = "reconciliation_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

"""transactions' tables: the event store, its snapshots, idempotency keys,
and the projections built from the events."""

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.inbox import inbox_table
from shared.models import BigId, service_base
from shared.outbox import outbox_table
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class StoredEvent(Base):
    """Append-only. `position` orders every event of every stream."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),)

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Snapshot(Base):
    """Each stream's state as of its latest event (kept by every append)."""

    __tablename__ = "snapshots"

    stream_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text)
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransferRequest(Base):
    """Idempotency: one transfer per (customer, Idempotency-Key)."""

    __tablename__ = "transfer_requests"

    owner_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    transfer_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransferView(Base):
    """Projection: each transfer's current status and steps."""

    __tablename__ = "transfer_view"
    __table_args__ = (
        Index("ix_transfer_view_pending", "status", "deadline"),
        # A customer's transfers, newest first, as either party (keyset pages):
        # what they sent (their own moves included), what others sent them.
        Index("ix_transfer_view_owner", "owner_id", "position"),
        Index(
            "ix_transfer_view_received",
            "to_owner_id",
            "position",
            postgresql_where=text("to_owner_id <> owner_id"),
            sqlite_where=text("to_owner_id <> owner_id"),
        ),
    )

    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(36))
    to_owner_id: Mapped[str | None] = mapped_column(String(36))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    from_account_id: Mapped[str | None] = mapped_column(String(36))
    to_account_id: Mapped[str | None] = mapped_column(String(36))
    reference: Mapped[str | None] = mapped_column(String(140))
    steps: Mapped[str] = mapped_column(Text)
    deadline: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    # Order of listing: the position of the transfer's first event.
    position: Mapped[int] = mapped_column(BigInteger)


class AccountHistory(Base):
    """Projection: the transfers each account took part in."""

    __tablename__ = "account_history"
    __table_args__ = (Index("ix_account_history_account", "account_id", "position"),)

    account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    transfer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    position: Mapped[int] = mapped_column(BigInteger)


inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

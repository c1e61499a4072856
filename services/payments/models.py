"""payments' tables: provider operations, received provider events, the outbox.

`provider_operations` has one row per (kind, transfer): the row is written
"in flight" and committed before the provider is called, so a crash leaves
a record that the operation may have happened, and its idempotency key to
send it again with. `provider_events` keeps every webhook event once, by
the provider's event id.
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import BigId, service_base
from shared.outbox import outbox_table
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class ProviderOperation(Base):
    """A charge or payout sent to the provider for one transfer."""

    __tablename__ = "provider_operations"
    __table_args__ = (
        UniqueConstraint("kind", "transfer_id", name="uq_provider_operations_kind_transfer"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('in_flight', 'succeeded', 'failed')", name="known_status"),
        # Reconciliation reads operations by window; the daily report by finish.
        Index("ix_provider_operations_created_at", "created_at"),
        Index("ix_provider_operations_finished_at", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    transfer_id: Mapped[str] = mapped_column(String(36))
    provider: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # A digest of what the provider is sent (amount, currency, card token or
    # beneficiary): a repeated call for the transfer must match it.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    provider_reference: Mapped[str | None] = mapped_column(String(100), index=True)
    reason: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The saga's transfer (transfer_requested's payload), passed on in the
    # outcome event however the outcome arrives (API answer or webhook).
    transfer: Mapped[str | None] = mapped_column(Text)


class ProviderEvent(Base):
    """A webhook event as the provider sent it, kept once per event id."""

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_provider_events_provider_event"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(64))
    provider_reference: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(100), index=True)
    body: Mapped[str] = mapped_column(Text)
    # The operation this event finished, when it arrived before our own answer.
    operation_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


outbox = outbox_table(metadata)

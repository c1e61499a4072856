"""notifications' tables: the directory, preferences, and every notification.

`notifications` holds one row per (event, customer, channel): the unique
constraint is what makes an event notify each customer once per channel,
whatever the deliveries. A row is created in the transaction that claims
the event (inbox) and then moves pending -> sending -> sent | failed.
"""

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.inbox import inbox_table
from shared.models import service_base
from shared.sqltypes import UtcDateTime

Base = service_base()
metadata = Base.metadata


class Recipient(Base):
    """The directory: what auth told us about each customer (user_registered)."""

    __tablename__ = "recipients"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)  # the event's occurred_at
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Preference(Base):
    """A customer's choices; no row means the defaults (email only)."""

    __tablename__ = "preferences"
    __table_args__ = (
        CheckConstraint("NOT sms OR phone IS NOT NULL", name="sms_needs_phone"),
        CheckConstraint("NOT push OR push_token IS NOT NULL", name="push_needs_token"),
    )

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[bool] = mapped_column(Boolean, server_default=true())
    sms: Mapped[bool] = mapped_column(Boolean, server_default=false())
    push: Mapped[bool] = mapped_column(Boolean, server_default=false())
    phone: Mapped[str | None] = mapped_column(String(16))  # E.164
    push_token: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "user_id", "channel", name="uq_notifications_event_user"),
        CheckConstraint("channel IN ('email', 'sms', 'push')", name="channel_known"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status_known"),
        # A customer's list, newest first.
        Index("ix_notifications_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(8))
    template: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(Text)  # email address, phone, or push token
    subject: Mapped[str | None] = mapped_column(String(300))  # email subject, push title
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    # Tries so far (each a provider call with its own retries); the last error.
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(300))
    # False when the provider refused the message itself (a bad number): a
    # replay of the parked event does not send it again.
    retryable: Mapped[bool] = mapped_column(Boolean, server_default=true())
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    # While "sending": no other worker takes it before this time.
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


inbox = inbox_table(metadata)

"""notifications' read views: a customer's notifications, and one in full for operators."""

from sqlalchemy import select

from services.notifications.models import Notification
from shared.database import UnitOfWork


def _view(row: Notification) -> dict:
    return {
        "notification_id": row.id,
        "channel": row.channel,
        "template": row.template,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "event_type": row.event_type,
        "attempts": row.attempts,
    }


def list_notifications(uow: UnitOfWork, user_id: str, limit: int = 50) -> list[dict]:
    """A customer's notifications, newest first."""
    with uow.commit_on_exit() as session:
        rows = session.scalars(
            select(Notification)
            .where(Notification.user_id == user_id)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(limit)
        )
        return [_view(row) for row in rows]


def get_notification(uow: UnitOfWork, notification_id: str) -> dict | None:
    """One notification with its content and delivery details (operators)."""
    with uow.commit_on_exit() as session:
        row = session.get(Notification, notification_id)
        if row is None:
            return None
        return {
            **_view(row),
            "event_id": row.event_id,
            "user_id": row.user_id,
            "subject": row.subject,
            "body": row.body,
            "last_error": row.last_error,
            "retryable": row.retryable,
            "provider_reference": row.provider_reference,
        }

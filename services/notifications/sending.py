"""notifications' sending: turn an event into notifications and deliver them.

An event is handled in two steps, and no transaction is open while a
provider is called:

1. plan (once per event, through the inbox): in one transaction claim the
   event, remember the customer (user_registered), and create one row per
   (event, customer, channel) the customer wants, with the message
   rendered, already leased to this delivery, which goes on to send them.
   A customer whose email address is not known yet (their
   user_registered is still on its way: events of different types arrive
   in any order) fails the step before anything is claimed, so the retry
   plans it again (if the address never comes, the event is parked like
   any failure; a replay once the directory knows it sends it);
2. deliver (on every later delivery of the event, duplicates and retries):
   take each of the event's rows still to send with a lease
   (pending, or sending with its lease run out, or failed but retryable:
   a replay from the dead-letter queue), call its provider, and record
   (in one transaction for all of them) sent, or failed for good
   (refused), or pending with the error. Rows
   left unsent fail the step (DeliveryIncomplete), so the event is
   retried; on its last attempt they are marked failed first, and the
   event is then parked in saga.notifications.dead-letters.

A row is sent at most once by this service: the lease keeps two workers
(a duplicate delivery, a redelivery after a crash) from sending it at the
same time, and a sent row is never taken again. A crash after the provider
accepted a message but before it was recorded sends it again when the
lease runs out: SMS and push carry the notification id as their
idempotency key, so the provider drops the second one; an email would go
out twice (with the same Message-ID).
"""

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import String, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from services.notifications import domain, templates
from services.notifications.models import Notification, Preference, Recipient
from services.notifications.preferences import preferences_of
from services.notifications.providers import Channels, ProviderRejected
from services.notifications.steps import Delivery
from shared import contracts
from shared.database import (
    UnitOfWork,
    claims_deferred,
    defer,
    insert_ignoring_duplicates,
    new_row,
    query,
)
from shared.events import event_time
from shared.inbox import claim
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)

_ERROR_MAX = 300


class RecipientUnknown(RuntimeError):
    """A customer to email whose address is not in the directory (yet)."""


class DeliveryIncomplete(RuntimeError):
    """Some of an event's notifications are not sent yet: retry the event."""


@claims_deferred
def handle_event(
    uow: UnitOfWork,
    channels: Channels,
    event_type: str,
    inbox_handler: str,
    envelope: Mapping,
    *,
    delivery: Delivery | None = None,
    now: datetime,
    lease: timedelta = timedelta(seconds=60),
) -> dict:
    """Plan an event's notifications (once) and deliver what is still unsent.

    The first delivery creates the rows already leased to itself, so it
    sends them without taking them again; any later one (a retry, a
    duplicate) takes what is still unsent.
    """
    delivery = delivery or Delivery()
    payload = envelope.get("payload")
    planned = domain.plan(event_type, payload, envelope.get("occurred_at"))
    with uow.commit_on_exit() as session:
        taken = None
        if claim(session, envelope, inbox_handler):
            if event_type == contracts.USER_REGISTERED:
                _remember(session, payload, envelope, now)
            taken = [
                row
                for item in planned
                for row in _create_notifications(session, envelope, event_type, item, now, lease)
            ]
    if taken is None:
        return deliver(uow, channels, envelope["event_id"], delivery=delivery, now=now, lease=lease)
    return _send(uow, channels, envelope["event_id"], taken, [], delivery, now)


def _remember(session: Session, payload: Mapping, envelope: Mapping, now: datetime) -> None:
    """The directory entry of a newly registered customer (the first report wins)."""
    user_id, email = payload.get("user_id"), payload.get("email")
    if not (isinstance(email, str) and "@" in email and len(email) <= 320):
        raise domain.MalformedEvent(f"user_registered without a usable email: {email!r}")
    values = {
        "user_id": user_id,
        "email": email,
        "full_name": (payload.get("full_name") or None),
        "registered_at": event_time(envelope, now),
        "updated_at": now,
    }
    insert_ignoring_duplicates(session, Recipient.__table__, values)


_recipients = Recipient.__table__
_prefs = Preference.__table__


def _of_user(column):
    return select(column).where(column.table.c.user_id == bindparam("user_id")).scalar_subquery()


# A customer's address, name and preferences, each row optional, in one read.
_RECIPIENT = select(
    _of_user(_recipients.c.email).label("address"),
    _of_user(_recipients.c.full_name).label("full_name"),
    exists().where(_prefs.c.user_id == bindparam("user_id")).label("has_preferences"),
    *(
        _of_user(_prefs.c[name]).label(name)
        for name in ("email", "sms", "push", "phone", "push_token")
    ),
)


def _recipient(session: Session, user_id: str) -> tuple[domain.Recipient, str | None]:
    """What channels need to know about a customer, and their name."""
    row = query(session, _RECIPIENT, {"user_id": user_id}).one()
    return (
        domain.Recipient(
            preferences=preferences_of(row if row.has_preferences else None), email=row.address
        ),
        row.full_name,
    )


def _create_notifications(
    session: Session,
    envelope: Mapping,
    event_type: str,
    planned: domain.Planned,
    now: datetime,
    lease: timedelta,
) -> list[SimpleNamespace]:
    """The planned customer's rows, one per channel they want, leased for sending."""
    recipient, name = _recipient(session, planned.user_id)
    wanted = domain.channels(recipient)
    if domain.EMAIL in wanted and wanted[domain.EMAIL] is None:
        raise RecipientUnknown(
            f"no email address for user {planned.user_id} yet (user_registered not seen)"
        )
    if not wanted:
        return []
    # Only what the wanted channels send (an email needs no SMS text).
    rendered = templates.render(planned.template, {**planned.context, "name": name}, wanted)
    rows = []
    for channel, address in wanted.items():
        subject, body = rendered.for_channel(channel)
        rows.append(
            new_row(
                _NOTIFICATION_COLUMNS,
                id=str(uuid.uuid4()),
                event_id=envelope["event_id"],
                event_type=event_type,
                user_id=planned.user_id,
                channel=channel,
                template=planned.template,
                recipient=address,
                subject=subject,
                body=body,
                status=domain.SENDING,
                lease_until=now + lease,
                attempts=1,
                retryable=True,
                created_at=now,
                updated_at=now,
            )
        )
    for row in rows:
        # The unique (event, user, channel) refuses a second row (at the commit).
        defer(session, _ADD_NOTIFICATION, vars(row))
    return rows


_ADD_NOTIFICATION = Notification.__table__.insert().inline()
_NOTIFICATION_COLUMNS = tuple(column.key for column in Notification.__table__.columns)


def _to_send(now: datetime):
    """Rows a worker may take: not sent, not refused, not leased by another worker."""
    return or_(
        Notification.status == domain.PENDING,
        and_(Notification.status == domain.FAILED, Notification.retryable.is_(True)),
        and_(Notification.status == domain.SENDING, Notification.lease_until < now),
    )


def deliver(
    uow: UnitOfWork,
    channels: Channels,
    event_id: str,
    *,
    delivery: Delivery | None = None,
    now: datetime,
    lease: timedelta = timedelta(seconds=60),
) -> dict:
    """Send an event's unsent notifications; raise DeliveryIncomplete if some remain."""
    delivery = delivery or Delivery()
    with uow.commit_on_exit() as session:
        rows = session.execute(
            select(Notification.id, Notification.status)
            .where(Notification.event_id == event_id)
            .order_by(Notification.created_at, Notification.id)
        ).all()
    taken, held_elsewhere = [], []
    for notification_id, status in rows:
        if status == domain.SENT:
            continue
        row = _take(uow, notification_id, now, lease)
        if row is None:
            held_elsewhere.append(notification_id)
        else:
            taken.append(row)
    return _send(uow, channels, event_id, taken, held_elsewhere, delivery, now)


def _send(
    uow: UnitOfWork,
    channels: Channels,
    event_id: str,
    taken: list[Notification | SimpleNamespace],
    held_elsewhere: list[str],
    delivery: Delivery,
    now: datetime,
) -> dict:
    """Call each taken row's provider, then record every outcome in one transaction."""
    outcome = {"sent": 0, "failed": 0, "pending": 0}
    errors, finished = [], []
    for row in taken:
        try:
            reference = channels.send(row.channel, row.id, row.recipient, row.subject, row.body)
        except ProviderRejected as exc:
            finished.append((row.id, domain.FAILED, {"error": str(exc), "retryable": False}))
            outcome["failed"] += 1
            log.warning(
                "notification refused by its provider",
                extra={"notification_id": row.id, "channel": row.channel, "error": exc.code},
            )
        except Exception as exc:  # noqa: BLE001 (unavailable, or a bug: kept for a retry)
            error = f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"
            status = domain.FAILED if delivery.final else domain.PENDING
            finished.append((row.id, status, {"error": error, "retryable": True}))
            outcome["failed" if delivery.final else "pending"] += 1
            errors.append(f"{row.channel} {row.id}: {error}")
        else:
            finished.append((row.id, domain.SENT, {"reference": reference}))
            outcome["sent"] += 1
    with uow.commit_on_exit() as session:
        for notification_id, status, details in finished:
            _finish(session, notification_id, status, now, **details)
        outcome["pending"] += sum(_still_unsent(session, n) for n in held_elsewhere)
    unsent = outcome["pending"] + (len(errors) if delivery.final else 0)
    if unsent:
        detail = "; ".join(errors) or "another worker is sending them"
        raise DeliveryIncomplete(
            f"{unsent} notification(s) of event {event_id} not sent "
            f"(attempt {delivery.attempt} of {delivery.attempts}): {detail}"[:1000]
        )
    return outcome


def _take(uow: UnitOfWork, notification_id: str, now: datetime, lease: timedelta):
    """Lease one row for sending; None if another worker has it or it is done."""
    with uow.commit_on_exit() as session:
        taken = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, _to_send(now))
            .values(
                status=domain.SENDING,
                lease_until=now + lease,
                attempts=Notification.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            return None
        return session.get(Notification, notification_id)


def _still_unsent(session: Session, notification_id: str) -> int:
    """1 when a row someone else holds is not sent (yet), else 0."""
    row = session.get(Notification, notification_id)
    return int(row is not None and row.status == domain.SENDING)


def _finish(
    session: Session,
    notification_id: str,
    status: str,
    now: datetime,
    *,
    reference: str | None = None,
    error: str | None = None,
    retryable: bool = True,
) -> None:
    sent = status == domain.SENT
    defer(
        session,
        _FINISH,
        {
            "notification": notification_id,
            "outcome": status,
            "last_error": error[:_ERROR_MAX] if error else None,
            "retryable": retryable,
            "sent_at": now if sent else None,
            "provider_reference": ((reference or "")[:200] or None) if sent else None,
            "updated_at": now,
        },
    )


_notifications = Notification.__table__
# An outcome is recorded only over the lease that sent it.
_FINISH = (
    update(_notifications)
    .where(
        _notifications.c.id == bindparam("notification"),
        _notifications.c.status == domain.SENDING,
    )
    .values(
        status=bindparam("outcome"),
        lease_until=None,
        updated_at=bindparam("updated_at"),
        last_error=bindparam("last_error"),
        retryable=bindparam("retryable"),
        sent_at=func.coalesce(bindparam("sent_at", type_=UtcDateTime), _notifications.c.sent_at),
        provider_reference=func.coalesce(
            bindparam("provider_reference", type_=String), _notifications.c.provider_reference
        ),
    )
)

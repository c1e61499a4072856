"""notifications' preferences: which channels a customer wants, and where."""

from collections.abc import Mapping
from datetime import datetime

from services.notifications import domain
from services.notifications.models import Preference
from shared.database import UnitOfWork
from shared.errors import InvalidInput


def preferences_of(row: Preference | None) -> domain.Preferences:
    if row is None:
        return domain.DEFAULT_PREFERENCES
    return domain.Preferences(
        email=row.email, sms=row.sms, push=row.push, phone=row.phone, push_token=row.push_token
    )


def get_preferences(uow: UnitOfWork, user_id: str) -> dict:
    with uow.commit_on_exit() as session:
        return preferences_of(session.get(Preference, user_id)).as_dict()


def set_preferences(uow: UnitOfWork, user_id: str, changes: Mapping, now: datetime) -> dict:
    """Apply a change (absent keys stay, null clears phone or push_token)."""
    with uow.commit_on_exit() as session:
        row = session.get(Preference, user_id, with_for_update=True)
        try:
            updated = domain.merge_preferences(preferences_of(row), changes)
        except domain.PreferenceError as exc:
            raise InvalidInput(exc.code, exc.message, {exc.field: [exc.message]}) from None
        if row is None:
            row = Preference(user_id=user_id)
            session.add(row)
        row.email, row.sms, row.push = updated.email, updated.sms, updated.push
        row.phone, row.push_token = updated.phone, updated.push_token
        row.updated_at = now
    return updated.as_dict()

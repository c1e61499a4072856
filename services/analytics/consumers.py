"""analytics' consumers: one `handle_<event>` per transfer outcome it projects.

Each logs the event and projects it in one transaction that claims it in
the inbox first (see projections.record_event), so a duplicate delivery
does nothing.
"""

from datetime import datetime

from services.analytics import domain, projections
from shared.database import UnitOfWork

# Inbox handler names, "<service>.<entrypoint>" (stored with every claimed event: keep them stable).
COMPLETED_HANDLER = "analytics.handle_transfer_completed"
FAILED_HANDLER = "analytics.handle_transfer_failed"


def handle_transfer_completed(
    uow: UnitOfWork, envelope: dict, now: datetime, settings: domain.AnomalySettings
) -> bool:
    """Log and project a completed transfer; False for a duplicate delivery."""
    return projections.record_event(uow, envelope, COMPLETED_HANDLER, now, settings)


def handle_transfer_failed(
    uow: UnitOfWork, envelope: dict, now: datetime, settings: domain.AnomalySettings
) -> bool:
    """Log and project a failed transfer; False for a duplicate delivery."""
    return projections.record_event(uow, envelope, FAILED_HANDLER, now, settings)

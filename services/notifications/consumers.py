"""notifications' consumers: one `handle_<event>` per event it tells customers about.

Every event is handled alike (see sending.handle_event): its notifications
are planned once, claimed in the inbox under the event's handler name, and
what is still unsent is delivered on every delivery of the event. `send`
holds the rest of what sending.handle_event takes: delivery, now, lease.
"""

from collections.abc import Mapping

from services.notifications import sending
from services.notifications.providers import Channels
from shared import contracts
from shared.database import UnitOfWork

# Inbox handler names (stored with every claimed event: keep them stable).
USER_REGISTERED_HANDLER = "notifications.on_user_registered"
LOGIN_SUCCEEDED_HANDLER = "notifications.on_login_succeeded"
MFA_ENABLED_HANDLER = "notifications.on_mfa_enabled"
TRANSFER_COMPLETED_HANDLER = "notifications.on_transfer_completed"
TRANSFER_FAILED_HANDLER = "notifications.on_transfer_failed"
TRANSFER_REVIEW_REQUESTED_HANDLER = "notifications.on_transfer_review_requested"


def handle_user_registered(uow: UnitOfWork, channels: Channels, envelope: Mapping, **send) -> dict:
    """Welcome the customer (and remember their email address)."""
    return sending.handle_event(
        uow, channels, contracts.USER_REGISTERED, USER_REGISTERED_HANDLER, envelope, **send
    )


def handle_login_succeeded(uow: UnitOfWork, channels: Channels, envelope: Mapping, **send) -> dict:
    """Tell the customer about a new sign-in."""
    return sending.handle_event(
        uow, channels, contracts.LOGIN_SUCCEEDED, LOGIN_SUCCEEDED_HANDLER, envelope, **send
    )


def handle_mfa_enabled(uow: UnitOfWork, channels: Channels, envelope: Mapping, **send) -> dict:
    """Confirm that two-factor sign-in is on."""
    return sending.handle_event(
        uow, channels, contracts.MFA_ENABLED, MFA_ENABLED_HANDLER, envelope, **send
    )


def handle_transfer_completed(
    uow: UnitOfWork, channels: Channels, envelope: Mapping, **send
) -> dict:
    """Tell each customer in the transfer that it went through."""
    return sending.handle_event(
        uow, channels, contracts.TRANSFER_COMPLETED, TRANSFER_COMPLETED_HANDLER, envelope, **send
    )


def handle_transfer_failed(uow: UnitOfWork, channels: Channels, envelope: Mapping, **send) -> dict:
    """Tell the customer that their transfer failed."""
    return sending.handle_event(
        uow, channels, contracts.TRANSFER_FAILED, TRANSFER_FAILED_HANDLER, envelope, **send
    )


def handle_transfer_review_requested(
    uow: UnitOfWork, channels: Channels, envelope: Mapping, **send
) -> dict:
    """Tell the customer that their transfer is under review."""
    return sending.handle_event(
        uow,
        channels,
        contracts.TRANSFER_REVIEW_REQUESTED,
        TRANSFER_REVIEW_REQUESTED_HANDLER,
        envelope,
        **send,
    )

"""risk's consumers: one `handle_<event>` per event it acts on.

`transfer_requested` (an internal transfer or a payout) is assessed;
`transfer_failed` withdraws the transfer's review, if it is held;
`account_opened` and `login_failed` are facts the rules judge later (an
account's age and owner, a customer's failed logins). Each runs in one
transaction that claims the event in the inbox first, so a duplicate
delivery does nothing.
"""

from datetime import datetime

from services.risk import assessment, reviews
from services.risk.models import AccountAge, LoginFailure
from services.risk.rulebook import RuleCache
from shared.database import UnitOfWork, claims_deferred
from shared.events import event_time, is_id
from shared.inbox import claim

# Inbox handler names, "<service>.<step>" (stored with every claimed event: keep them stable).
ASSESS_HANDLER = "risk.assess_transfer"
ACCOUNT_OPENED_HANDLER = "risk.record_account_opened"
LOGIN_FAILED_HANDLER = "risk.record_login_failed"
TRANSFER_FAILED_HANDLER = "risk.withdraw_review"


def handle_transfer_requested(
    uow: UnitOfWork, envelope: dict, now: datetime, cache: RuleCache | None = None
) -> dict | None:
    """Assess the transfer (see assessment.assess_transfer)."""
    return assessment.assess_transfer(uow, envelope, ASSESS_HANDLER, now, cache)


def handle_transfer_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """The saga failed the transfer: withdraw its review, if one is pending."""
    reviews.withdraw_review(uow, envelope, TRANSFER_FAILED_HANDLER, now)


@claims_deferred
def handle_account_opened(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Remember when an account was opened (the first report wins)."""
    payload = envelope["payload"]
    account_id = payload.get("account_id")
    if not is_id(account_id):
        raise ValueError(f"account_opened without a usable account_id: {account_id!r}")
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, ACCOUNT_OPENED_HANDLER):
            return
        if session.get(AccountAge, account_id) is None:
            session.add(
                AccountAge(
                    account_id=account_id,
                    owner_id=payload.get("owner_id"),
                    currency=payload.get("currency"),
                    opened_at=event_time(envelope, now),
                    recorded_at=now,
                )
            )


@claims_deferred
def handle_login_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Remember a failed login: enough of them raise the customer's risk."""
    payload = envelope["payload"]
    user_id = payload.get("user_id")
    if not is_id(user_id):
        raise ValueError(f"login_failed without a usable user_id: {user_id!r}")
    factor = payload.get("factor")
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, LOGIN_FAILED_HANDLER):
            return
        session.add(
            LoginFailure(
                user_id=user_id,
                factor=factor[:16] if isinstance(factor, str) else None,
                occurred_at=event_time(envelope, now),
                event_id=envelope["event_id"],
            )
        )

"""risk's assessment of a transfer: gather the facts, judge them, announce the verdict.

A transfer is decided once. The assessment runs in one transaction: claim
the event in the inbox (a duplicate delivery does nothing), re-use the
transfer's assessment if it already has one (a second request for the same
transfer gets the same decision again, never a new one), otherwise gather
the facts, judge them under the rules in force, store the decision and
stage what follows in the outbox: `transfer_approved` or
`transfer_rejected`, `transfer_review_requested` for a transfer held for
review (see reviews).

Velocity counts what is committed, so two transfers from one account
assessed at the same moment could both squeeze under a count. On
PostgreSQL each assessment therefore takes a transaction-scoped advisory
lock on its source account; on SQLite the process's single connection
already serialises them.
"""

import functools
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, literal, select
from sqlalchemy.orm import Session

from services.risk import domain, reviews
from services.risk.models import AccountAge, Assessment, Customer, EndedTransfer, LoginFailure
from services.risk.rulebook import NEWEST_RULES, RuleCache
from services.risk.views import assessment_view, final_decision, review_of
from shared import contracts, iban
from shared.database import UnitOfWork, advisory_lock, claims_deferred, defer, new_row, query
from shared.events import is_id
from shared.inbox import claim
from shared.outbox import stage
from shared.sqltypes import utc_hour

log = logging.getLogger(__name__)

# Transfers that may still move money count toward velocity.
COUNTED = (contracts.APPROVE, contracts.REVIEW)
# An assessment's final decision (rows from before the column read as `decision`).
FINAL = func.coalesce(Assessment.final_decision, Assessment.decision)


class MalformedTransfer(ValueError):
    """A transfer_requested that cannot be assessed: a producer bug, parked for a human."""


def _checked(transfer: Mapping) -> tuple[str, str, int, str, str | None]:
    transfer_id = transfer.get("transfer_id")
    account_id = transfer.get("from_account_id")
    amount = transfer.get("amount")
    currency = transfer.get("currency")
    owner_id = transfer.get("owner_id")
    if not is_id(transfer_id):
        raise MalformedTransfer(f"transfer_id {transfer_id!r}")
    if not is_id(account_id):
        raise MalformedTransfer(f"transfer {transfer_id}: from_account_id {account_id!r}")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise MalformedTransfer(f"transfer {transfer_id}: amount {amount!r}")
    if not (isinstance(currency, str) and currency in domain.CURRENCY_DIGITS):
        raise MalformedTransfer(f"transfer {transfer_id}: currency {currency!r}")
    if owner_id is not None and not is_id(owner_id):
        raise MalformedTransfer(f"transfer {transfer_id}: owner_id {owner_id!r}")
    return transfer_id, account_id, amount, currency, owner_id


def beneficiary_of(transfer: Mapping) -> str | None:
    """Who is paid, as compared across transfers: an account, or an IBAN."""
    if transfer.get("kind") == contracts.KIND_PAYOUT:
        details = transfer.get("beneficiary")
        number = details.get("iban") if isinstance(details, Mapping) else None
        return f"iban:{iban.normalise(number)}"[:64] if isinstance(number, str) else None
    to_account = transfer.get("to_account_id")
    return f"account:{to_account}" if isinstance(to_account, str) else None


def _account_lock(account_id: str) -> str:
    """Serialises assessments of one source account until the transaction ends."""
    return f"risk.velocity:{account_id}"


@functools.cache
def _facts_query(with_payee: bool):
    """The scalar facts of an assessment in one statement, built once per
    shape (with or without a payee to look up): every value is a bind
    parameter."""
    in_hour = Assessment.assessed_at > bindparam("hour_ago")
    velocity = (
        select(
            func.count().filter(in_hour).label("hour_count"),
            func.coalesce(func.sum(Assessment.amount).filter(in_hour), 0).label("hour_total"),
            func.count().label("day_count"),
            func.coalesce(func.sum(Assessment.amount), 0).label("day_total"),
        )
        .where(
            Assessment.account_id == bindparam("account_id"),
            FINAL.in_([literal(decision) for decision in COUNTED]),
            Assessment.assessed_at > bindparam("day_ago"),
        )
        .subquery()
    )
    # Whether this customer had a transfer to this payee approved.
    paid_before = (
        select(Assessment.id)
        .where(
            Assessment.owner_id == bindparam("owner_id"),
            Assessment.beneficiary == bindparam("payee"),
            FINAL == contracts.APPROVE,
        )
        .limit(1)
        .exists()
        if with_payee
        else literal(False)
    )
    scalar = {
        "opened_at": select(AccountAge.opened_at)
        .where(AccountAge.account_id == bindparam("account_id"))
        .scalar_subquery(),
        "tier": select(Customer.tier)
        .where(Customer.user_id == bindparam("owner_id"))
        .scalar_subquery(),
        "failed_logins": select(func.count())
        .where(
            LoginFailure.user_id == bindparam("owner_id"),
            LoginFailure.occurred_at > bindparam("logins_since"),
        )
        .scalar_subquery(),
        "target_owner": select(AccountAge.owner_id)
        .where(AccountAge.account_id == bindparam("to_account_id"))
        .scalar_subquery(),
        "paid_before": paid_before,
        "assessed": select(Assessment.id)
        .where(Assessment.transfer_id == bindparam("transfer_id"))
        .scalar_subquery(),
        "ended": select(EndedTransfer.transfer_id)
        .where(EndedTransfer.transfer_id == bindparam("transfer_id"))
        .exists(),
        "rules_version": NEWEST_RULES.scalar_subquery(),
    }
    return select(*velocity.c, *(value.label(name) for name, value in scalar.items()))


# A customer's recent approved transfers, newest first: each one's amount
# if it is in the currency assessed (else NULL) and its hour of day, as
# integers (the rules need no more; a row of them is cheap to read).
_HISTORY = (
    select(
        case((Assessment.currency == bindparam("currency"), Assessment.amount)).label("amount"),
        utc_hour(Assessment.assessed_at).label("hour"),
    )
    .where(Assessment.owner_id == bindparam("owner_id"), FINAL == contracts.APPROVE)
    .order_by(Assessment.id.desc())
    .limit(bindparam("history_size"))
)


def _facts(
    session: Session,
    transfer: Mapping,
    account_id: str,
    owner_id: str | None,
    now: datetime,
    rules: domain.RuleSet,
) -> tuple[domain.Facts, object]:
    """Everything the rules judge, read in two statements: the scalar facts
    (account age, tier, failed logins, velocity, beneficiary) in one, the
    customer's recent approved history in the other.

    The first also says what decides whether to judge at all: an earlier
    assessment of this transfer (`assessed`), whether the saga ended it
    already (`ended`), and the newest rules version (`rules_version`: if it
    is not `rules`, the caller judges again by the newer rules)."""
    key = beneficiary_of(transfer)
    internal = transfer.get("kind") == contracts.KIND_INTERNAL
    row = query(
        session,
        _facts_query(bool(owner_id and key)),
        {
            "account_id": account_id,
            "owner_id": owner_id,
            "payee": key,
            "to_account_id": transfer.get("to_account_id"),
            "transfer_id": transfer["transfer_id"],
            "hour_ago": now - timedelta(hours=1),
            "day_ago": now - timedelta(hours=24),
            "logins_since": now - timedelta(hours=rules.failed_logins_hours),
        },
    ).one()
    history: list = []
    if owner_id:
        history = query(
            session,
            _HISTORY,
            {
                "owner_id": owner_id,
                "currency": transfer["currency"],
                "history_size": rules.history_size,
            },
        )
    own_account = internal and owner_id is not None and row.target_owner == owner_id
    facts = domain.Facts(
        amount=transfer["amount"],
        currency=transfer["currency"],
        tier=row.tier if owner_id else None,
        account_opened_at=row.opened_at,
        last_hour=domain.Window(count=int(row.hour_count), total=int(row.hour_total)),
        last_day=domain.Window(count=int(row.day_count), total=int(row.day_total)),
        # Their own accounts are never new; nor is anything without an owner or payee.
        new_beneficiary=bool(owner_id and key and not own_account and not row.paid_before),
        history_amounts=tuple(amount for amount, _ in history if amount is not None),
        history_hours=tuple(hour for _, hour in history),
        failed_logins=int(row.failed_logins or 0) if owner_id else 0,
    )
    return facts, row


@claims_deferred
def assess_transfer(
    uow: UnitOfWork,
    envelope: dict,
    inbox_handler: str,
    now: datetime,
    cache: RuleCache | None = None,
) -> dict | None:
    """Decide on an internal transfer or a payout and announce the decision.

    Returns the assessment, or None for a deposit (not assessed) and for a
    duplicate delivery (the event already claimed as `inbox_handler`).
    """
    transfer = envelope["payload"]
    if not domain.is_assessed(transfer.get("kind")):
        return None
    transfer_id, account_id, amount, currency, owner_id = _checked(transfer)
    cache = cache or RuleCache()
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, inbox_handler):
            return None
        # The account's lock first, then the transfer's (withdraw_review's).
        advisory_lock(session, _account_lock(account_id), reviews.transfer_lock(transfer_id))
        rules = cache.cached
        facts, found = _facts(session, transfer, account_id, owner_id, now, rules)
        if found.assessed is not None:
            assessment = session.get(Assessment, found.assessed)
            _repeat(session, assessment, transfer, envelope["event_id"])
            return assessment_view(assessment, review_of(session, transfer_id))
        if (found.rules_version or 0) != rules.version:
            rules = cache.current(session, found.rules_version or 0)
            facts, _ = _facts(session, transfer, account_id, owner_id, now, rules)
        decision = domain.assess(facts, now, rules)
        # Failed before it reached risk (its deadline passed while risk was
        # away): judged for the record, never held, never moving money.
        ended = bool(found.ended)
        # A row, read as an Assessment is (views, reviews): no ORM object on the hot path.
        assessment = new_row(
            _ASSESSMENT_COLUMNS,
            transfer_id=transfer_id,
            kind=transfer["kind"],
            account_id=account_id,
            amount=amount,
            currency=currency,
            decision=decision.decision,
            final_decision=contracts.REJECT if ended else decision.decision,
            score=decision.score,
            reasons=json.dumps(list(decision.reasons)),
            signals=json.dumps(decision.signals),
            event_id=envelope["event_id"],
            assessed_at=now,
            owner_id=owner_id,
            beneficiary=beneficiary_of(transfer),
            tier=decision.signals["tier"],
            rules_version=rules.version,
        )
        # The unique transfer_id refuses a second decision (at the commit: a
        # concurrent one rolls this back, and its retry repeats that decision).
        defer(session, _RECORD_ASSESSMENT, vars(assessment))
        review = None
        if ended:
            log.info("transfer failed before it was assessed", extra={"transfer_id": transfer_id})
        elif decision.decision == contracts.REVIEW:
            review = reviews.hold(session, assessment, transfer, now, rules, envelope["event_id"])
        else:
            stage(
                session,
                reviews.verdict(assessment, transfer, None),
                causation_id=envelope["event_id"],
            )
        view = assessment_view(assessment, review)
    if decision.decision != contracts.APPROVE:
        log.info(
            "transfer held for review" if review else "transfer rejected",
            extra={"transfer_id": transfer_id, "score": view["score"], "reasons": view["reasons"]},
        )
    return view


_RECORD_ASSESSMENT = Assessment.__table__.insert().inline()
_ASSESSMENT_COLUMNS = tuple(
    column.key for column in Assessment.__table__.columns if not column.primary_key
)


def _repeat(session: Session, assessment: Assessment, transfer: Mapping, event_id: str) -> None:
    """The same transfer requested again: repeat its final decision, if it has one
    (a pending review's outcome is announced when it is decided)."""
    log.info(
        "transfer assessed before; repeating its decision",
        extra={"transfer_id": assessment.transfer_id, "decision": final_decision(assessment)},
    )
    if final_decision(assessment) == contracts.REVIEW:
        return
    review = review_of(session, assessment.transfer_id)
    stage(session, reviews.verdict(assessment, transfer, review), causation_id=event_id)

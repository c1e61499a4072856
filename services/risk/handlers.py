"""risk's use cases: assess transfers, hold some for review, keep the rules.

A transfer is decided once. The assessment runs in one transaction: claim
the event in the inbox (a duplicate delivery does nothing), re-use the
transfer's assessment if it already has one (a second request for the same
transfer gets the same decision again, never a new one), otherwise gather
the facts, judge them under the rules in force, store the decision and
stage what follows in the outbox: `transfer_approved` or
`transfer_rejected`, `transfer_review_requested` for a transfer held for review.

A held transfer ends in exactly one of: an admin approves or rejects it
(`decide_review`), its time runs out and it is rejected (`expire_reviews`),
or the saga fails it first, e.g. at its deadline (`withdraw_review`). Each
is a conditional update of the still-pending review, so two of them racing
(two admins, an admin and the sweep) cannot both win; the winner stages
the final verdict, which the saga continues from.

Velocity counts what is committed, so two transfers from one account
assessed at the same moment could both squeeze under a count. On
PostgreSQL each assessment therefore takes a transaction-scoped advisory
lock on its source account; on SQLite the process's single connection
already serialises them.
"""

import functools
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from marshmallow import ValidationError
from sqlalchemy import bindparam, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.risk import domain, schemas
from services.risk.models import (
    AccountAge,
    Assessment,
    Customer,
    EndedTransfer,
    LoginFailure,
    Review,
    RuleSetVersion,
)
from shared import contracts, iban
from shared.database import UnitOfWork, advisory_lock, connection_of, defer
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import event_time, is_id
from shared.inbox import claim
from shared.outbox import stage

log = logging.getLogger(__name__)

# Inbox handler names: "<service>.<step>".
ASSESS_HANDLER = "risk.assess_transfer"
ACCOUNT_OPENED_HANDLER = "risk.record_account_opened"
LOGIN_FAILED_HANDLER = "risk.record_login_failed"
TRANSFER_FAILED_HANDLER = "risk.withdraw_review"

# Who decides when no admin does.
SYSTEM = "system"

PENDING, APPROVED, REJECTED, EXPIRED, WITHDRAWN = schemas.REVIEW_STATUSES
# Transfers that may still move money count toward velocity.
COUNTED = (contracts.APPROVE, contracts.REVIEW)
# An assessment's final decision (rows from before the column read as `decision`).
FINAL = func.coalesce(Assessment.final_decision, Assessment.decision)


def final_decision(assessment: Assessment) -> str:
    return assessment.final_decision or assessment.decision


class MalformedTransfer(ValueError):
    """A transfer_requested that cannot be assessed: a producer bug, parked for a human."""


# -- rules ---------------------------------------------------------------------


NEWEST_RULES = select(func.max(RuleSetVersion.version))


class RuleCache:
    """The rules in force, re-read only when a new version appears.

    Every assessment asks the database for the highest version (one indexed
    lookup), so a version stored by any instance applies to the next
    transfer everywhere, with no restart and no message to miss.
    """

    def __init__(self):
        self._rules = domain.RuleSet()
        self._unreadable: int | None = None  # the newest version, if it cannot be read

    @property
    def cached(self) -> domain.RuleSet:
        """The rules last read (what an assessment starts from; see `current`)."""
        return self._rules

    def current(self, session: Session, newest: int | None = None) -> domain.RuleSet:
        """The rules in force; `newest` is the highest stored version when the
        caller has just read it (so it is not asked for again)."""
        version = newest if newest is not None else session.scalar(NEWEST_RULES) or 0
        if version not in (self._rules.version, self._unreadable):
            try:
                self._rules = _stored_rules(session, version)
                self._unreadable = None
            except (ValidationError, domain.RuleError):
                # Never stop assessing over a document this code cannot read:
                # judge by the newest version that can be, and say so loudly.
                self._unreadable = version
                self._rules = _newest_readable(session, version)
                log.exception(
                    "stored risk rules unreadable; an earlier version stays in force",
                    extra={"version": version, "in_force": self._rules.version},
                )
        return self._rules


def _newest_readable(session: Session, below: int) -> domain.RuleSet:
    versions = session.scalars(
        select(RuleSetVersion.version)
        .where(RuleSetVersion.version < below)
        .order_by(RuleSetVersion.version.desc())
    )
    for version in versions:
        try:
            return _stored_rules(session, version)
        except (ValidationError, domain.RuleError):
            continue
    return domain.RuleSet()


def _stored_rules(session: Session, version: int) -> domain.RuleSet:
    """A stored version, read through domain.upgrade_document so that a
    document written by an earlier release (a currency since added, a field
    since introduced) stays usable."""
    if version == 0:
        return domain.RuleSet()
    row = session.get(RuleSetVersion, version)
    if row is None:
        raise NotFound("rules_version_not_found", f"No rules version {version}.")
    document = domain.upgrade_document(json.loads(row.document))
    return domain.RuleSet.from_document(schemas.RuleSetDocument().load(document), version)


def _flatten(errors: Mapping, prefix: str) -> dict[str, list[str]]:
    """marshmallow's nested messages as {"rules.tiers.gold.daily_count": [...]}
    (a dict's value errors nest under "value", which says nothing here)."""
    flat: dict[str, list[str]] = {}
    for key, value in errors.items():
        where = prefix if key == "value" else f"{prefix}.{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, where))
        else:
            flat[where] = [str(message) for message in value]
    return flat


def _parse_rules(document: Mapping) -> domain.RuleSet:
    try:
        checked = schemas.RuleSetDocument().load(document)
        return domain.RuleSet.from_document(checked, version=0)
    except ValidationError as exc:
        errors = _flatten(exc.normalized_messages(), "rules")
    except domain.RuleError as exc:
        errors = {f"rules.{key}": messages for key, messages in exc.errors.items()}
    raise InvalidInput("invalid_rules", f"Invalid value for {next(iter(errors))}.", errors)


def _rules_view(rules: domain.RuleSet, row: RuleSetVersion | None) -> dict:
    return {
        "version": rules.version,
        "created_at": row.created_at.isoformat() if row else None,
        "created_by": row.created_by if row else "built-in",
        "comment": row.comment if row else "the defaults, in force until a version is stored",
        "rules": rules.to_document(),
    }


def get_rules(uow: UnitOfWork, cache: RuleCache, version: int | None = None) -> dict:
    with uow.commit_on_exit() as session:
        rules = cache.current(session) if version is None else _stored_rules(session, version)
        row = session.get(RuleSetVersion, rules.version) if rules.version else None
        return _rules_view(rules, row)


def list_rule_versions(uow: UnitOfWork, limit: int = 50) -> dict:
    with uow.commit_on_exit() as session:
        rows = session.scalars(
            select(RuleSetVersion).order_by(RuleSetVersion.version.desc()).limit(limit)
        )
        return {
            "items": [
                {
                    "version": row.version,
                    "created_at": row.created_at.isoformat(),
                    "created_by": row.created_by,
                    "comment": row.comment,
                }
                for row in rows
            ]
        }


def put_rules(
    uow: UnitOfWork,
    cache: RuleCache,
    document: Mapping,
    changed_by: str,
    comment: str | None,
    now: datetime,
) -> dict:
    """Store a new version of the rules; it applies to the next assessment."""
    parsed = _parse_rules(document)
    try:
        with uow.commit_on_exit() as session:
            version = (session.scalar(select(func.max(RuleSetVersion.version))) or 0) + 1
            rules = parsed.with_version(version)
            row = RuleSetVersion(
                version=version,
                document=json.dumps(rules.to_document(), sort_keys=True),
                created_at=now,
                created_by=changed_by,
                comment=comment,
            )
            session.add(row)
            session.flush()
            view = _rules_view(rules, row)
    except IntegrityError:
        raise Conflict(
            "rules_changed_concurrently", "Another version was stored at the same moment; retry."
        ) from None
    log.info("risk rules changed", extra={"version": version, "changed_by": changed_by})
    return view


# -- customers ---------------------------------------------------------------------


def _failed_logins(
    session: Session, user_id: str, now: datetime, rules: domain.RuleSet
) -> tuple[int, datetime | None]:
    """The customer's failed logins within the rules' window, and the last one."""
    count, last = session.execute(
        select(func.count(), func.max(LoginFailure.occurred_at)).where(
            LoginFailure.user_id == user_id,
            LoginFailure.occurred_at > now - timedelta(hours=rules.failed_logins_hours),
        )
    ).one()
    return int(count), last


def _customer_view(session: Session, rules: domain.RuleSet, user_id: str, now: datetime) -> dict:
    customer = session.get(Customer, user_id)
    count, last = _failed_logins(session, user_id, now, rules)
    return {
        "user_id": user_id,
        "tier": rules.tier_name(customer.tier if customer else None),
        "failed_logins": count,
        "failed_logins_window_hours": rules.failed_logins_hours,
        "last_failed_login_at": last.isoformat() if last else None,
        "elevated": count >= rules.failed_logins_threshold,
    }


def get_customer(uow: UnitOfWork, cache: RuleCache, user_id: str, now: datetime) -> dict:
    with uow.commit_on_exit() as session:
        return _customer_view(session, cache.current(session), user_id, now)


def set_customer_tier(
    uow: UnitOfWork, cache: RuleCache, user_id: str, tier: str, changed_by: str, now: datetime
) -> dict:
    with uow.commit_on_exit() as session:
        rules = cache.current(session)
        if tier not in rules.tiers:
            known = ", ".join(sorted(rules.tiers))
            raise InvalidInput(
                "unknown_tier",
                f"The rules in force have no tier {tier!r}.",
                {"tier": [f"Must be one of: {known}."]},
            )
        customer = session.get(Customer, user_id)
        if customer is None:
            session.add(Customer(user_id=user_id, tier=tier, updated_at=now, updated_by=changed_by))
        else:
            customer.tier, customer.updated_at, customer.updated_by = tier, now, changed_by
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                "tier_changed_concurrently", "The tier was set at the same moment; retry."
            ) from None
        return _customer_view(session, rules, user_id, now)


# -- assessing a transfer -------------------------------------------------------------


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


def _transfer_lock(transfer_id: str) -> str:
    """Serialises assessing a transfer with learning that it failed (taken
    after the account's lock, never before it)."""
    return f"risk.transfer:{transfer_id}"


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
            FINAL.in_(COUNTED),
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


# A customer's recent approved transfers, newest first.
_HISTORY = (
    select(Assessment.amount, Assessment.currency, Assessment.assessed_at)
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
    connection = connection_of(session)
    row = connection.execute(
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
        history = connection.execute(
            _HISTORY, {"owner_id": owner_id, "history_size": rules.history_size}
        ).all()
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
        history_amounts=tuple(a for a, c, _ in history if c == transfer["currency"]),
        history_hours=tuple(at.hour for _, _, at in history),
        failed_logins=int(row.failed_logins or 0) if owner_id else 0,
    )
    return facts, row


def _verdict(
    assessment: Assessment, transfer: Mapping, review: Review | None
) -> contracts.TransferApproved | contracts.TransferRejected:
    """The final word on a transfer, for the saga: approved or rejected."""
    reasons = json.loads(assessment.reasons)
    extra = {}
    if review is not None:
        if review.status == EXPIRED:
            reasons = [*reasons, domain.REVIEW_EXPIRED]
        extra = {"review_id": review.review_id, "decided_by": review.decided_by}
    verdict = (
        contracts.TransferApproved
        if final_decision(assessment) == contracts.APPROVE
        else contracts.TransferRejected
    )
    return verdict(
        transfer_id=assessment.transfer_id,
        score=assessment.score,
        reasons=tuple(reasons),
        transfer=contracts.TransferDetails.from_payload(transfer),
        **extra,
    )


def assess_transfer(
    uow: UnitOfWork, envelope: dict, now: datetime, cache: RuleCache | None = None
) -> dict | None:
    """Decide on an internal transfer or a payout and announce the decision.

    Returns the assessment, or None for a deposit (not assessed) and for a
    duplicate delivery of an event already handled.
    """
    transfer = envelope["payload"]
    if not domain.is_assessed(transfer.get("kind")):
        return None
    transfer_id, account_id, amount, currency, owner_id = _checked(transfer)
    cache = cache or RuleCache()
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, ASSESS_HANDLER):
            return None
        # The account's lock first, then the transfer's (withdraw_review's).
        advisory_lock(session, _account_lock(account_id), _transfer_lock(transfer_id))
        rules = cache.cached
        facts, found = _facts(session, transfer, account_id, owner_id, now, rules)
        if found.assessed is not None:
            assessment = session.get(Assessment, found.assessed)
            _repeat(session, assessment, transfer, envelope["event_id"])
            return _assessment_view(assessment, _review_of(session, transfer_id))
        if (found.rules_version or 0) != rules.version:
            rules = cache.current(session, found.rules_version or 0)
            facts, _ = _facts(session, transfer, account_id, owner_id, now, rules)
        decision = domain.assess(facts, now, rules)
        # Failed before it reached risk (its deadline passed while risk was
        # away): judged for the record, never held, never moving money.
        ended = bool(found.ended)
        assessment = Assessment(
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
        defer(session, _RECORD_ASSESSMENT, _row_of(assessment))
        review = None
        if ended:
            log.info("transfer failed before it was assessed", extra={"transfer_id": transfer_id})
        elif decision.decision == contracts.REVIEW:
            review = _hold(session, assessment, transfer, now, rules, envelope["event_id"])
        else:
            stage(session, _verdict(assessment, transfer, None), causation_id=envelope["event_id"])
        view = _assessment_view(assessment, review)
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


def _row_of(assessment: Assessment) -> dict:
    return {key: getattr(assessment, key) for key in _ASSESSMENT_COLUMNS}


def _repeat(session: Session, assessment: Assessment, transfer: Mapping, event_id: str) -> None:
    """The same transfer requested again: repeat its final decision, if it has one
    (a pending review's outcome is announced when it is decided)."""
    log.info(
        "transfer assessed before; repeating its decision",
        extra={"transfer_id": assessment.transfer_id, "decision": final_decision(assessment)},
    )
    if final_decision(assessment) == contracts.REVIEW:
        return
    review = _review_of(session, assessment.transfer_id)
    stage(session, _verdict(assessment, transfer, review), causation_id=event_id)


def _recipient(session: Session, transfer: Mapping) -> str | None:
    """Who receives an internal transfer, as far as risk knows."""
    named = transfer.get("to_owner_id")
    if is_id(named):
        return named
    if transfer.get("kind") != contracts.KIND_INTERNAL:
        return None  # a payout's IBAN names no customer of ours
    target = session.get(AccountAge, transfer.get("to_account_id"))
    return target.owner_id if target is not None else None


def _hold(
    session: Session,
    assessment: Assessment,
    transfer: Mapping,
    now: datetime,
    rules: domain.RuleSet,
    event_id: str,
) -> Review:
    review = Review(
        review_id=str(uuid.uuid4()),
        transfer_id=assessment.transfer_id,
        owner_id=assessment.owner_id,
        recipient_id=_recipient(session, transfer),
        status=PENDING,
        transfer=json.dumps(dict(transfer)),
        created_at=now,
        expires_at=now + timedelta(seconds=rules.review_seconds),
    )
    session.add(review)
    session.flush()
    stage(
        session,
        contracts.TransferReviewRequested(
            transfer_id=assessment.transfer_id,
            review_id=review.review_id,
            owner_id=assessment.owner_id,
            score=assessment.score,
            reasons=tuple(json.loads(assessment.reasons)),
            expires_at=review.expires_at.isoformat(),
            transfer=contracts.TransferDetails.from_payload(transfer),
        ),
        causation_id=event_id,
    )
    return review


# -- reviews ----------------------------------------------------------------------------


def _close_review(
    session: Session,
    review: Review,
    status: str,
    decided_by: str,
    note: str | None,
    now: datetime,
    announce: bool = True,
) -> bool:
    """Move a pending review to `status`; False when something else closed it first.

    The winner sets the assessment's final decision and, unless the saga
    already ended the transfer (withdrawn), stages the final verdict
    (transfer_approved or transfer_rejected).
    """
    closed = session.execute(
        update(Review)
        .where(Review.seq == review.seq, Review.status == PENDING)
        .values(status=status, decided_at=now, decided_by=decided_by, note=note)
    ).rowcount
    if closed != 1:
        return False
    session.refresh(review)
    final = contracts.APPROVE if status == APPROVED else contracts.REJECT
    assessment = session.scalar(
        select(Assessment).where(Assessment.transfer_id == review.transfer_id)
    )
    assessment.final_decision = final
    session.flush()
    if announce:
        stage(session, _verdict(assessment, json.loads(review.transfer), review))
    log.info(
        "review closed",
        extra={"transfer_id": review.transfer_id, "status": status, "decided_by": decided_by},
    )
    return True


def decide_review(
    uow: UnitOfWork,
    review_id: str,
    decision: str,
    decided_by: str,
    note: str | None,
    now: datetime,
) -> dict:
    """An admin approves (the saga continues) or rejects (it is compensated).

    Deciding again as already decided returns the review (a retried request);
    anything else on a closed review is a conflict. No admin decides on their
    own transfer.
    """
    status = APPROVED if decision == contracts.APPROVE else REJECTED
    with uow.commit_on_exit() as session:
        review = _review_by_id(session, review_id)
        if decided_by in {review.owner_id, review.recipient_id} - {None}:
            raise Forbidden(
                "own_transfer", "Nobody decides a review of a transfer they send or receive."
            )
        if review.status == status and review.decided_by == decided_by:
            return _review_view(session, review)
        if review.status != PENDING:
            raise Conflict("review_closed", f"This review is already {review.status}.")
        if review.expires_at <= now:
            raise Conflict("review_expired", "This review ran out of time; it is being rejected.")
        if not _close_review(session, review, status, decided_by, note, now):
            session.refresh(review)
            raise Conflict("review_closed", f"This review is already {review.status}.")
        return _review_view(session, review)


def expire_reviews(uow: UnitOfWork, now: datetime, batch: int = 100) -> int:
    """Reject the reviews nobody decided in time; returns how many."""
    with uow.commit_on_exit() as session:
        due = session.scalars(
            select(Review.seq)
            .where(Review.status == PENDING, Review.expires_at <= now)
            .order_by(Review.expires_at, Review.seq)
            .limit(batch)
        ).all()
    # One transaction per review: one that cannot be closed does not hold the
    # others back, and two instances sweeping at once never each hold locks
    # on several rows (they could deadlock).
    expired = 0
    for seq in due:
        with uow.commit_on_exit() as session:
            review = session.get(Review, seq)
            expired += _close_review(session, review, EXPIRED, SYSTEM, "not decided in time", now)
    if expired:
        log.info("reviews expired", extra={"count": expired})
    return expired


def withdraw_review(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """The saga failed a held transfer (at its deadline, say): close its review."""
    payload = envelope["payload"]
    with uow.commit_on_exit() as session:
        if not claim(session, envelope, TRANSFER_FAILED_HANDLER):
            return
        transfer_id = payload.get("transfer_id")
        if not is_id(transfer_id):
            raise ValueError(f"transfer_failed without a usable transfer_id: {transfer_id!r}")
        reason = str(payload.get("reason") or "failed")[:100]
        advisory_lock(session, _transfer_lock(transfer_id))
        review = _review_of(session, transfer_id)
        assessed = session.scalar(
            select(Assessment.id).where(Assessment.transfer_id == transfer_id)
        )
        if assessed is None:
            # Failed before risk saw it: remember, so it is never held later.
            session.merge(EndedTransfer(transfer_id=transfer_id, reason=reason, ended_at=now))
        elif review is not None and review.status == PENDING:
            _close_review(session, review, WITHDRAWN, SYSTEM, f"transfer {reason}", now, False)


def _review_of(session: Session, transfer_id: str) -> Review | None:
    return session.scalar(select(Review).where(Review.transfer_id == transfer_id))


def _review_by_id(session: Session, review_id: str) -> Review:
    review = session.scalar(select(Review).where(Review.review_id == review_id))
    if review is None:
        raise NotFound("review_not_found", "No such review.")
    return review


def _review_view(session: Session, review: Review, assessment: Assessment | None = None) -> dict:
    """A review with its transfer's assessment (looked up unless given)."""
    if assessment is None:
        assessment = session.scalar(
            select(Assessment).where(Assessment.transfer_id == review.transfer_id)
        )
    return {
        "review_id": review.review_id,
        "transfer_id": review.transfer_id,
        "kind": assessment.kind,
        "owner_id": review.owner_id,
        "recipient_id": review.recipient_id,
        "account_id": assessment.account_id,
        "amount": assessment.amount,
        "currency": assessment.currency,
        "score": assessment.score,
        "reasons": json.loads(assessment.reasons),
        "signals": json.loads(assessment.signals),
        "status": review.status,
        "created_at": review.created_at.isoformat(),
        "expires_at": review.expires_at.isoformat(),
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "decided_by": review.decided_by,
        "note": review.note,
    }


def get_review(uow: UnitOfWork, review_id: str) -> dict:
    with uow.commit_on_exit() as session:
        review = _review_by_id(session, review_id)
        return _review_view(session, review)


def list_reviews(
    uow: UnitOfWork, status: str = PENDING, limit: int = 50, cursor: int | None = None
) -> dict:
    """Reviews newest first (all, or in one status), keyset-paginated."""
    query = (
        select(Review, Assessment)
        .join(Assessment, Assessment.transfer_id == Review.transfer_id)
        .order_by(Review.seq.desc())
        .limit(limit)
    )
    if status != "all":
        query = query.where(Review.status == status)
    if cursor is not None:
        query = query.where(Review.seq < cursor)
    with uow.commit_on_exit() as session:
        rows = session.execute(query).all()
        return {
            "items": [_review_view(session, review, assessment) for review, assessment in rows],
            "next_cursor": str(rows[-1][0].seq) if len(rows) == limit else None,
        }


# -- other events ------------------------------------------------------------------------


def record_account_opened(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
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


def record_login_failed(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
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


# -- queries ------------------------------------------------------------------------------


def _assessment_view(assessment: Assessment, review: Review | None) -> dict:
    return {
        "transfer_id": assessment.transfer_id,
        "kind": assessment.kind,
        "owner_id": assessment.owner_id,
        "account_id": assessment.account_id,
        "beneficiary": assessment.beneficiary,
        "amount": assessment.amount,
        "currency": assessment.currency,
        "decision": assessment.decision,
        "final_decision": final_decision(assessment),
        "score": assessment.score,
        "reasons": json.loads(assessment.reasons),
        "signals": json.loads(assessment.signals),
        "tier": assessment.tier,
        "rules_version": assessment.rules_version,
        "assessed_at": assessment.assessed_at.isoformat(),
        "review_id": review.review_id if review else None,
    }


def get_assessment(uow: UnitOfWork, transfer_id: str) -> dict:
    with uow.commit_on_exit() as session:
        assessment = session.scalar(select(Assessment).where(Assessment.transfer_id == transfer_id))
        if assessment is None:
            raise NotFound("assessment_not_found", "No assessment for this transfer.")
        return _assessment_view(assessment, _review_of(session, transfer_id))


def list_assessments(
    uow: UnitOfWork,
    account_id: str | None = None,
    owner_id: str | None = None,
    decision: str | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> dict:
    """Assessments newest first, filtered, keyset-paginated."""
    query = (
        select(Assessment, Review)
        .outerjoin(Review, Review.transfer_id == Assessment.transfer_id)
        .order_by(Assessment.id.desc())
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(Assessment.account_id == account_id)
    if owner_id is not None:
        query = query.where(Assessment.owner_id == owner_id)
    if decision is not None:
        query = query.where(Assessment.decision == decision)
    if cursor is not None:
        query = query.where(Assessment.id < cursor)
    with uow.commit_on_exit() as session:
        rows = session.execute(query).all()
        return {
            "items": [_assessment_view(assessment, review) for assessment, review in rows],
            "next_cursor": str(rows[-1][0].id) if len(rows) == limit else None,
        }

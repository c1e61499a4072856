"""risk's rulebook: the versions of the rules an admin stores, the cache that
reads the one in force, and the tier each customer is judged under.

A version is a document (see schemas.RuleSetDocument) stored whole and
never changed; the highest one is in force for the next assessment, on
every instance, with no restart.
"""

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from marshmallow import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.risk import domain, schemas
from services.risk.models import Customer, LoginFailure, RuleSetVersion
from shared import audit
from shared.database import UnitOfWork
from shared.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

# The version in force: the highest stored (0, the defaults, when none is).
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
    caller: str | None = None,
) -> dict:
    """Store a new version of the rules; it applies to the next assessment.
    Audited: `changed_by` as the caller (a broker identity) vouches for them."""
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
            audit.record(
                session,
                audit.RULES_CHANGED,
                subject=str(version),
                actor=audit.Actor(caller, changed_by),
                at=now,
                details={"version": version, "comment": comment},
            )
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
    uow: UnitOfWork,
    cache: RuleCache,
    user_id: str,
    tier: str,
    changed_by: str,
    now: datetime,
    caller: str | None = None,
) -> dict:
    """Judge a customer under `tier`. Audited, as put_rules is."""
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
        previous = customer.tier if customer else None
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
        audit.record(
            session,
            audit.CUSTOMER_TIER_CHANGED,
            subject=user_id,
            actor=audit.Actor(caller, changed_by),
            at=now,
            details={"tier": tier, "previous_tier": previous},
        )
        return _customer_view(session, rules, user_id, now)

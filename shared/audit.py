"""The audit trail: who changed what, recorded with the change itself.

Each service that takes privileged commands (auth: roles, sessions; risk:
rules, tiers, reviews) keeps an `audit_entries` table in its own database
(`audit_table(metadata)` in its models, and a migration). A use case calls
`record(session, ...)` inside the transaction that makes the change, so an
entry exists exactly when the change committed.

An entry names two actors:

- `actor_identity`: the broker identity that made the RPC (`gateway`,
  `operator`, a service's name), as RabbitMQ checked it (shared.rpc's
  CallerIdentity). Never taken from an argument: a caller cannot claim to
  be someone else.
- `actor_user_id`: the person on whose behalf, as the caller vouches for
  them (the admin the gateway read from a verified JWT, the user who logs
  out); None for what the system does on its own (a reused refresh token).

Admins read the trail newest first, keyset-paginated (`list_entries`).
"""

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from marshmallow import Schema, fields, validate
from sqlalchemy import Column, Index, MetaData, String, Table, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared.database import UnitOfWork, defer
from shared.models import BigId
from shared.schemas import bigint
from shared.sqltypes import UtcDateTime

TABLE_NAME = "audit_entries"

# What is audited (auth's, then risk's).
ROLE_GRANTED = "role_granted"
SESSION_REVOKED = "session_revoked"
RULES_CHANGED = "rules_changed"
CUSTOMER_TIER_CHANGED = "customer_tier_changed"
REVIEW_DECIDED = "review_decided"
ACTIONS = (ROLE_GRANTED, SESSION_REVOKED, RULES_CHANGED, CUSTOMER_TIER_CHANGED, REVIEW_DECIDED)

MAX_PAGE = 200


def audit_table(metadata: MetaData) -> Table:
    """The audit trail, added to a service's metadata (and migrations)."""
    return Table(
        TABLE_NAME,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),  # the cursor
        Column("entry_id", String(36), nullable=False, unique=True),
        Column("at", UtcDateTime, nullable=False),
        Column("action", String(32), nullable=False),
        # None only for a request that carried no broker identity.
        Column("actor_identity", String(64)),
        Column("actor_user_id", String(64)),
        Column("subject", String(64), nullable=False),
        Column("details", Text, nullable=False),  # a small JSON object
        Index("ix_audit_entries_action", "action", "id"),
    )


_AUDIT = audit_table(MetaData())
_INSERT = _AUDIT.insert().inline()


@dataclass(frozen=True)
class Actor:
    """Who did it: the broker identity that called, and on whose behalf."""

    identity: str | None
    user_id: str | None = None


def record(
    session: Session | Connection,
    action: str,
    subject: str,
    actor: Actor,
    at: datetime,
    details: Mapping | None = None,
) -> str:
    """Write an entry in the caller's transaction (it commits or rolls back
    with the change); returns its entry_id. Sent with the transaction's next
    statement or its commit: no round trip of its own."""
    if action not in ACTIONS:
        raise ValueError(f"not an audited action: {action!r}")
    entry_id = str(uuid.uuid4())
    defer(
        session,
        _INSERT,
        {
            "entry_id": entry_id,
            "at": at,
            "action": action,
            "actor_identity": actor.identity,
            "actor_user_id": actor.user_id,
            "subject": str(subject),
            "details": json.dumps(dict(details or {}), sort_keys=True, default=str),
        },
    )
    return entry_id


class ListAuditArgs(Schema):
    """list_audit's arguments: `after`, a next_cursor from the previous page."""

    after = fields.Integer(load_default=None, allow_none=True, validate=bigint())
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))
    action = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(ACTIONS))


def entry_view(row) -> dict:
    return {
        "entry_id": row.entry_id,
        # Where this entry sits in the trail: passed as `after`, the page
        # continues past it (a reader merging trails keeps one per trail).
        "position": str(row.id),
        "at": row.at.isoformat(),
        "action": row.action,
        "actor_identity": row.actor_identity,
        "actor_user_id": row.actor_user_id,
        "subject": row.subject,
        "details": json.loads(row.details),
    }


def list_entries(
    uow: UnitOfWork, after_cursor: int | None, limit: int, action: str | None = None
) -> dict:
    """Entries newest first, `limit` a page, continuing after `after_cursor`
    (None: the first page). `next_cursor` is None on the last page."""
    query = select(_AUDIT).order_by(_AUDIT.c.id.desc()).limit(limit)
    if after_cursor is not None:
        query = query.where(_AUDIT.c.id < after_cursor)
    if action is not None:
        query = query.where(_AUDIT.c.action == action)
    with uow.read() as connection:
        rows = connection.execute(query).all()
    return {
        "items": [entry_view(row) for row in rows],
        "next_cursor": str(rows[-1].id) if len(rows) == limit else None,
    }

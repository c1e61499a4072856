"""/v1/admin/audit: who changed what, newest first, across the services that audit.

Auth (role grants, session revocations) and risk (rule versions, customer
tiers, review decisions) each keep their own trail in their own database
(shared/audit.py). An admin wants one trail, so the gateway merges a page
of each by time. The cursor is opaque to clients: it carries a position in
each service's trail (or that the trail is read to its end), so a page
never repeats or skips an entry, whichever service's entries it holds.
"""

import base64
import binascii
import json
from datetime import datetime

from marshmallow import Schema, fields, validate

from gateway.blueprints.risk_admin import MAX_CURSOR, admin_only
from gateway.bodies import Blueprint
from gateway.extensions import platform
from shared import audit, contracts
from shared.errors import BadRequest

blp = Blueprint("audit", __name__, description="The audit trail of privileged changes")

BEARER = [{"bearerAuth": []}]
# Which service keeps which actions.
TRAILS = {
    contracts.AUTH: (audit.ROLE_GRANTED, audit.SESSION_REVOKED),
    contracts.RISK: (audit.RULES_CHANGED, audit.CUSTOMER_TIER_CHANGED, audit.REVIEW_DECIDED),
}
_END = "end"  # a trail read to its end
# How each trail is read (named in full: shared.access grants the gateway these).
_READ = {
    contracts.AUTH: lambda rpc, **page: rpc.auth.list_audit(**page),
    contracts.RISK: lambda rpc, **page: rpc.risk.list_audit(**page),
}


class AuditQuery(Schema):
    service = fields.String(
        load_default=None,
        validate=validate.OneOf(TRAILS),
        metadata={"description": "Only this service's trail."},
    )
    action = fields.String(load_default=None, validate=validate.OneOf(audit.ACTIONS))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=audit.MAX_PAGE))
    cursor = fields.String(
        load_default=None,
        validate=validate.Length(max=MAX_CURSOR),
        metadata={"description": "next_cursor of the previous page, with the same filters."},
    )


class AuditEntry(Schema):
    entry_id = fields.UUID()
    service = fields.String(metadata={"enum": list(TRAILS)})
    at = fields.String(metadata={"format": "date-time"})
    action = fields.String(metadata={"enum": list(audit.ACTIONS)})
    actor_identity = fields.String(
        allow_none=True,
        metadata={"description": "The broker identity that made the change (`gateway`, ...)."},
    )
    actor_user_id = fields.String(
        allow_none=True, metadata={"description": "The person on whose behalf, if any."}
    )
    subject = fields.String(metadata={"description": "What changed: a user, a review, ..."})
    details = fields.Dict()


class AuditListResponse(Schema):
    items = fields.List(fields.Nested(AuditEntry))
    next_cursor = fields.String(allow_none=True)


def _decode(cursor: str | None) -> dict:
    """{service: position | None | _END} from a cursor (None: every trail from its start)."""
    if cursor is None:
        return dict.fromkeys(TRAILS)
    try:
        positions = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(positions, dict) or set(positions) != set(TRAILS):
            raise ValueError(cursor)
        for value in positions.values():
            if value not in (None, _END) and not (isinstance(value, str) and value.isdigit()):
                raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid_cursor", "Pass a next_cursor this endpoint returned.") from None
    return positions


def _encode(positions: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, sort_keys=True).encode()).decode()


def merge(pages: dict, positions: dict, limit: int) -> tuple[list, dict]:
    """The newest `limit` entries of the pages (one per trail, each newest
    first), and each trail's position after them."""
    tagged = [(service, entry) for service, page in pages.items() for entry in page["items"]]
    tagged.sort(
        key=lambda item: (datetime.fromisoformat(item[1]["at"]), int(item[1]["position"])),
        reverse=True,
    )
    taken = tagged[:limit]
    after = dict(positions)
    for service, page in pages.items():
        mine = [entry for tag, entry in taken if tag == service]
        if mine:
            after[service] = mine[-1]["position"]
        if len(mine) == len(page["items"]) and page["next_cursor"] is None:
            after[service] = _END
    return [{**entry, "service": service} for service, entry in taken], after


@blp.route("/v1/admin/audit", methods=["GET"])
@admin_only
@blp.arguments(AuditQuery(), location="query")
@blp.response(200, AuditListResponse)
@blp.doc(security=BEARER)
def list_audit(query):
    positions = _decode(query["cursor"])
    wanted = [
        service
        for service, actions in TRAILS.items()
        if query["service"] in (None, service)
        and query["action"] in (None, *actions)
        and positions[service] != _END
    ]
    pages = {}
    with platform().rpc.client() as rpc:
        for service in wanted:
            pages[service] = _READ[service](
                rpc, after=positions[service], limit=query["limit"], action=query["action"]
            )
    items, after = merge(pages, positions, query["limit"])
    done = all(after[service] == _END for service in wanted)
    return {"items": items, "next_cursor": None if done else _encode(after)}

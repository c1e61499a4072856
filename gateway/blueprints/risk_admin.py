"""/v1/admin/risk: the review queue, assessments, rule versions and customer tiers.

Admins only. The risk service decides and records everything; the gateway
checks the role, validates the request, names the admin who acted (from the
token, never the body) and shows money as decimal strings.
"""

import functools

from marshmallow import Schema, fields, validate

from gateway.bodies import Blueprint
from gateway.extensions import platform, principal, require_role
from gateway.schemas import Pattern, Strict
from shared.money import format_minor
from shared.schemas import TIER_NAME_ERROR, TIER_NAME_PATTERN, integer

blp = Blueprint(
    "risk_admin", __name__, description="Risk reviews, assessments, rules and customer tiers"
)

BEARER = [{"bearerAuth": []}]
ADMIN = "admin"
REVIEW_STATUSES = ["pending", "approved", "rejected", "expired", "withdrawn"]
ENGINE_DECISIONS = ["approve", "review", "reject"]
MAX_NOTE = 500
# Risk's cursors are opaque to the gateway; this only bounds what is passed on.
MAX_CURSOR = 256


def admin_only(view):
    """Check the role before anything else (no token 401, a customer 403, not 422)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        require_role(ADMIN)
        return view(*args, **kwargs)

    return wrapper


# -- schemas ----------------------------------------------------------------------

_limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
_cursor = fields.String(load_default=None, validate=validate.Length(max=MAX_CURSOR))
_amount = fields.String(
    metadata={"example": "12.34", "description": "Decimal string with the currency's digits."}
)
_timestamp = fields.String(allow_none=True, metadata={"format": "date-time"})


class RiskReviewListQuery(Schema):
    status = fields.String(
        load_default="pending",
        validate=validate.OneOf([*REVIEW_STATUSES, "all"]),
        metadata={"description": "Reviews in this state; `all` for every state."},
    )
    limit = _limit
    cursor = _cursor


class RiskReview(Schema):
    review_id = fields.UUID()
    transfer_id = fields.UUID()
    kind = fields.String(metadata={"enum": ["deposit", "internal", "payout"]})
    owner_id = fields.UUID()
    account_id = fields.UUID(allow_none=True)
    amount = _amount
    currency = fields.String()
    score = fields.Integer()
    reasons = fields.List(fields.String())
    signals = fields.Dict(metadata={"description": "What the rules saw, as the engine saw it."})
    status = fields.String(metadata={"enum": REVIEW_STATUSES})
    created_at = _timestamp
    expires_at = _timestamp
    decided_at = _timestamp
    decided_by = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


class RiskReviewListResponse(Schema):
    items = fields.List(fields.Nested(RiskReview))
    next_cursor = fields.String(allow_none=True)


class RiskReviewDecisionRequest(Strict):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_NOTE))


class RiskAssessmentListQuery(Schema):
    account_id = fields.UUID(load_default=None)
    customer_id = fields.UUID(
        load_default=None, metadata={"description": "The owner of the paying account."}
    )
    decision = fields.String(
        load_default=None,
        validate=validate.OneOf(ENGINE_DECISIONS),
        metadata={"description": "The engine's decision (before any review)."},
    )
    limit = _limit
    cursor = _cursor


class RiskAssessment(Schema):
    transfer_id = fields.UUID()
    kind = fields.String(metadata={"enum": ["deposit", "internal", "payout"]})
    owner_id = fields.UUID()
    account_id = fields.UUID(allow_none=True)
    beneficiary = fields.String(
        allow_none=True,
        metadata={
            "description": "Who is paid, as compared across transfers: "
            "account:<account_id> or iban:<IBAN>.",
            "example": "iban:DE89370400440532013000",
        },
    )
    amount = _amount
    currency = fields.String()
    decision = fields.String(
        metadata={"enum": ENGINE_DECISIONS, "description": "What the engine decided."}
    )
    final_decision = fields.String(
        allow_none=True,
        metadata={
            "description": "approve | reject once decided (by the engine or a review); "
            "review while an admin has not decided."
        },
    )
    score = fields.Integer()
    reasons = fields.List(fields.String())
    signals = fields.Dict()
    tier = fields.String(allow_none=True)
    rules_version = fields.Integer(allow_none=True)
    assessed_at = _timestamp
    review_id = fields.UUID(allow_none=True)


class RiskAssessmentListResponse(Schema):
    items = fields.List(fields.Nested(RiskAssessment))
    next_cursor = fields.String(allow_none=True)


class RiskRulesQuery(Schema):
    version = fields.Integer(
        load_default=None,
        validate=integer(),  # rule versions are an INTEGER column (services/risk/models.py)
        metadata={"description": "The current version when absent."},
    )


class RiskRuleVersion(Schema):
    version = fields.Integer()
    created_at = _timestamp
    created_by = fields.String(allow_none=True)
    comment = fields.String(allow_none=True)


class RiskRulesResponse(RiskRuleVersion):
    rules = fields.Dict(
        metadata={"description": "The rule document; money in it as decimal strings."}
    )


class RiskRulesUpdate(Strict):
    rules = fields.Dict(
        required=True,
        metadata={"description": "The whole new rule document; the risk service validates it."},
    )
    comment = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_NOTE)
    )


class RiskRuleVersionsQuery(Schema):
    limit = _limit


class RiskRuleVersionListResponse(Schema):
    items = fields.List(fields.Nested(RiskRuleVersion))


class RiskCustomer(Schema):
    user_id = fields.UUID()
    tier = fields.String()
    failed_logins = fields.Integer()
    failed_logins_window_hours = fields.Integer()
    last_failed_login_at = _timestamp
    elevated = fields.Boolean()


class RiskCustomerUpdate(Strict):
    tier = fields.String(
        required=True,
        # The risk service checks it again.
        validate=Pattern(TIER_NAME_PATTERN, error=TIER_NAME_ERROR),
        metadata={"description": "One of the tiers the current rules define."},
    )


# -- views ------------------------------------------------------------------------


def _with_money(view: dict) -> dict:
    return {**view, "amount": format_minor(view["amount"], view["currency"])}


def _page(page: dict) -> dict:
    return {
        "items": [_with_money(item) for item in page["items"]],
        "next_cursor": page["next_cursor"],
    }


@blp.route("/v1/admin/risk/reviews", methods=["GET"])
@admin_only
@blp.arguments(RiskReviewListQuery(), location="query")
@blp.response(200, RiskReviewListResponse)
@blp.doc(security=BEARER)
def list_reviews(query):
    with platform().rpc.client() as rpc:
        return _page(
            rpc.risk.list_reviews(
                status=query["status"], limit=query["limit"], cursor=query["cursor"]
            )
        )


@blp.route("/v1/admin/risk/reviews/<uuid:review_id>", methods=["GET"])
@admin_only
@blp.response(200, RiskReview)
@blp.doc(security=BEARER)
def get_review(review_id):
    with platform().rpc.client() as rpc:
        return _with_money(rpc.risk.get_review(review_id=str(review_id)))


@blp.route("/v1/admin/risk/reviews/<uuid:review_id>/decision", methods=["POST"])
@admin_only
@blp.arguments(RiskReviewDecisionRequest())
@blp.response(200, RiskReview)
@blp.doc(security=BEARER)
def decide_review(body, review_id):
    with platform().rpc.client() as rpc:
        review = rpc.risk.decide_review(
            review_id=str(review_id),
            decision=body["decision"],
            decided_by=principal().user_id,
            note=body["note"],
        )
    return _with_money(review)


@blp.route("/v1/admin/risk/assessments", methods=["GET"])
@admin_only
@blp.arguments(RiskAssessmentListQuery(), location="query")
@blp.response(200, RiskAssessmentListResponse)
@blp.doc(security=BEARER)
def list_assessments(query):
    account_id, customer_id = query["account_id"], query["customer_id"]
    with platform().rpc.client() as rpc:
        page = rpc.risk.list_assessments(
            account_id=str(account_id) if account_id else None,
            owner_id=str(customer_id) if customer_id else None,
            decision=query["decision"],
            limit=query["limit"],
            cursor=query["cursor"],
        )
    return _page(page)


@blp.route("/v1/admin/risk/assessments/<uuid:transfer_id>", methods=["GET"])
@admin_only
@blp.response(200, RiskAssessment)
@blp.doc(security=BEARER)
def get_assessment(transfer_id):
    with platform().rpc.client() as rpc:
        return _with_money(rpc.risk.get_assessment(transfer_id=str(transfer_id)))


@blp.route("/v1/admin/risk/rules", methods=["GET"])
@admin_only
@blp.arguments(RiskRulesQuery(), location="query")
@blp.response(200, RiskRulesResponse)
@blp.doc(security=BEARER)
def get_rules(query):
    with platform().rpc.client() as rpc:
        return rpc.risk.get_rules(version=query["version"])


@blp.route("/v1/admin/risk/rules", methods=["PUT"])
@admin_only
@blp.arguments(RiskRulesUpdate())
@blp.response(200, RiskRulesResponse)
@blp.doc(security=BEARER)
def put_rules(body):
    with platform().rpc.client() as rpc:
        return rpc.risk.put_rules(
            rules=body["rules"], changed_by=principal().user_id, comment=body["comment"]
        )


@blp.route("/v1/admin/risk/rules/versions", methods=["GET"])
@admin_only
@blp.arguments(RiskRuleVersionsQuery(), location="query")
@blp.response(200, RiskRuleVersionListResponse)
@blp.doc(security=BEARER)
def list_rule_versions(query):
    with platform().rpc.client() as rpc:
        return rpc.risk.list_rule_versions(limit=query["limit"])


@blp.route("/v1/admin/risk/customers/<uuid:user_id>", methods=["GET"])
@admin_only
@blp.response(200, RiskCustomer)
@blp.doc(security=BEARER)
def get_customer(user_id):
    with platform().rpc.client() as rpc:
        return rpc.risk.get_customer(user_id=str(user_id))


@blp.route("/v1/admin/risk/customers/<uuid:user_id>", methods=["PUT"])
@admin_only
@blp.arguments(RiskCustomerUpdate())
@blp.response(200, RiskCustomer)
@blp.doc(security=BEARER)
def set_customer_tier(body, user_id):
    with platform().rpc.client() as rpc:
        return rpc.risk.set_customer_tier(
            user_id=str(user_id), tier=body["tier"], changed_by=principal().user_id
        )

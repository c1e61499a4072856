"""risk's RPC argument schemas, and the shape of a rule set document.

The document's shape and ranges are checked here; what needs the whole
document (amounts in each currency's digits, the default tier covering
every currency, review at or below reject) in domain.RuleSet.from_document.
"""

from marshmallow import RAISE, Schema, fields, validate

from services.risk import domain
from shared.money import CURRENCY_DIGITS
from shared.schemas import TIER_NAME_ERROR, TIER_NAME_PATTERN, bigint, integer

REVIEW_STATUSES = ("pending", "approved", "rejected", "expired", "withdrawn")
TIER_NAME = validate.Regexp(TIER_NAME_PATTERN, error=TIER_NAME_ERROR)
CURRENCY = validate.OneOf(sorted(CURRENCY_DIGITS), error="Must be a supported ISO 4217 code.")
COUNT = validate.Range(min=1, max=1_000_000)
PERCENT = validate.Range(min=1, max=100)
SCORE = validate.Range(min=1, max=domain.MAX_SCORE)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class AssessmentRef(Schema):
    transfer_id = fields.UUID(required=True)


class ListAssessmentsArgs(Schema):
    account_id = fields.UUID(load_default=None, allow_none=True)
    owner_id = fields.UUID(load_default=None, allow_none=True)
    decision = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["approve", "review", "reject"]),
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.Integer(load_default=None, allow_none=True, validate=bigint())


class ReviewRef(Schema):
    review_id = fields.UUID(required=True)


class ListReviewsArgs(Schema):
    status = fields.String(
        load_default="pending", validate=validate.OneOf([*REVIEW_STATUSES, "all"])
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.Integer(load_default=None, allow_none=True, validate=bigint())


class DecideReviewArgs(Schema):
    review_id = fields.UUID(required=True)
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    decided_by = fields.String(required=True, validate=validate.Length(min=1, max=36))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class CustomerRef(Schema):
    user_id = fields.UUID(required=True)


class SetTierArgs(Schema):
    user_id = fields.UUID(required=True)
    tier = fields.String(required=True, validate=TIER_NAME)
    changed_by = fields.String(required=True, validate=validate.Length(min=1, max=64))


class RulesRef(Schema):
    version = fields.Integer(load_default=None, allow_none=True, validate=integer(0))


class ListRuleVersionsArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


# -- the rule set document ---------------------------------------------------------


class CurrencyLimitsDoc(_Strict):
    per_transfer = fields.String(required=True)
    hourly_amount = fields.String(required=True)
    daily_amount = fields.String(required=True)


class TierDoc(_Strict):
    hourly_count = fields.Integer(required=True, strict=True, validate=COUNT)
    daily_count = fields.Integer(required=True, strict=True, validate=COUNT)
    currencies = fields.Dict(
        keys=fields.String(validate=CURRENCY),
        values=fields.Nested(CurrencyLimitsDoc),
        required=True,
    )


class NewAccountDoc(_Strict):
    hours = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=8760))
    limit_percent = fields.Integer(required=True, strict=True, validate=PERCENT)


class UnusualHourDoc(_Strict):
    min_history = fields.Integer(required=True, strict=True, validate=COUNT)
    max_share_percent = fields.Integer(required=True, strict=True, validate=PERCENT)


class AmountSpikeDoc(_Strict):
    min_history = fields.Integer(required=True, strict=True, validate=COUNT)
    threshold = fields.Float(required=True, validate=validate.Range(min=0.5, max=100))
    min_spread_percent = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=100)
    )
    min_limit_percent = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=100)
    )


class FailedLoginsDoc(_Strict):
    hours = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=720))
    threshold = fields.Integer(required=True, strict=True, validate=COUNT)


class RuleSetDocument(_Strict):
    """What an admin writes; domain.RuleSet.to_document() is a complete example."""

    review_score = fields.Integer(required=True, strict=True, validate=SCORE)
    reject_score = fields.Integer(required=True, strict=True, validate=SCORE)
    review_seconds = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=30 * 24 * 3600)
    )
    weights = fields.Dict(
        keys=fields.String(validate=validate.OneOf(sorted(domain.REASONS))),
        values=fields.Integer(strict=True, validate=validate.Range(min=0, max=domain.MAX_SCORE)),
        required=True,
    )
    default_tier = fields.String(required=True, validate=TIER_NAME)
    tiers = fields.Dict(
        keys=fields.String(validate=TIER_NAME),
        values=fields.Nested(TierDoc),
        required=True,
        validate=validate.Length(min=1, max=50),
    )
    new_account = fields.Nested(NewAccountDoc, required=True)
    large_amount_percent = fields.Integer(required=True, strict=True, validate=PERCENT)
    unusual_hour = fields.Nested(UnusualHourDoc, required=True)
    amount_spike = fields.Nested(AmountSpikeDoc, required=True)
    history_size = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=1000)
    )
    failed_logins = fields.Nested(FailedLoginsDoc, required=True)


class PutRulesArgs(Schema):
    rules = fields.Dict(required=True)  # checked by RuleSetDocument
    changed_by = fields.String(required=True, validate=validate.Length(min=1, max=64))
    comment = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

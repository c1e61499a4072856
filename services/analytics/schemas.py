"""analytics' RPC argument schemas."""

from marshmallow import Schema, fields, validate

from services.analytics.domain import MONTH_RE

_month = fields.String(
    required=True, validate=validate.Regexp(MONTH_RE, error="Must be a month, YYYY-MM.")
)


class SummaryArgs(Schema):
    user_id = fields.UUID(required=True)
    month = _month


class InsightsArgs(Schema):
    user_id = fields.UUID(required=True)
    today = fields.Date(load_default=None, allow_none=True)


class AnomaliesArgs(Schema):
    user_id = fields.UUID(required=True)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))

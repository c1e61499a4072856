"""payments' RPC argument schemas."""

from datetime import timedelta

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.money import CURRENCY_DIGITS
from shared.schemas import Beneficiary, bigint

_CURRENCY = validate.OneOf(sorted(CURRENCY_DIGITS))
PROVIDER_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class _Operation(Schema):
    transfer_id = fields.UUID(required=True)
    amount = fields.Integer(required=True, strict=True, validate=bigint())
    currency = fields.String(required=True, validate=_CURRENCY)


class ChargeArgs(_Operation):
    token = fields.String(required=True, validate=validate.Length(min=1, max=255))


class PayoutArgs(_Operation):
    beneficiary = fields.Nested(Beneficiary, required=True)


class OperationRef(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(["charge", "payout"]))
    transfer_id = fields.UUID(required=True)


class ProviderEventArgs(Schema):
    """A webhook event; fields beyond these are kept as the provider sent them."""

    class Meta:
        unknown = INCLUDE

    event_id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    idempotency_key = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=100)
    )
    amount = fields.Integer(load_default=None, allow_none=True, strict=True, validate=bigint())
    currency = fields.String(load_default=None, allow_none=True)
    failure_code = fields.String(load_default=None, allow_none=True)


class RecordProviderEventArgs(Schema):
    provider = fields.String(required=True, validate=validate.Regexp(PROVIDER_NAME))
    event = fields.Nested(ProviderEventArgs, required=True)


class TransferIds(Schema):
    transfer_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=2000))


class IdRange(Schema):
    after = fields.String(required=True, validate=validate.Length(max=36))
    upto = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=36))


class WindowArgs(Schema):
    """A window of at most a week, in aware ISO-8601 datetimes."""

    since = fields.AwareDateTime(required=True)
    until = fields.AwareDateTime(required=True)

    @validates_schema
    def _ordered(self, data, **_kwargs):
        span = data["until"] - data["since"]
        if not timedelta(0) < span <= timedelta(days=7):
            raise ValidationError("until must be after since, by at most 7 days.", "until")


class DayTotalsArgs(Schema):
    day = fields.Date(required=True, format="%Y-%m-%d")
    currency = fields.String(required=True, validate=_CURRENCY)

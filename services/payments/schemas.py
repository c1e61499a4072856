"""payments' RPC argument schemas."""

from marshmallow import INCLUDE, Schema, fields, validate

from shared.money import CURRENCY_DIGITS

_CURRENCY = validate.OneOf(sorted(CURRENCY_DIGITS))
PROVIDER_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class _Operation(Schema):
    transfer_id = fields.UUID(required=True)
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    currency = fields.String(required=True, validate=_CURRENCY)


class ChargeArgs(_Operation):
    token = fields.String(required=True, validate=validate.Length(min=1, max=255))


class Beneficiary(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=140))
    iban = fields.String(required=True, validate=validate.Length(min=1, max=64))


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
    amount = fields.Integer(load_default=None, allow_none=True, strict=True)
    currency = fields.String(load_default=None, allow_none=True)
    failure_code = fields.String(load_default=None, allow_none=True)


class RecordProviderEventArgs(Schema):
    provider = fields.String(required=True, validate=validate.Regexp(PROVIDER_NAME))
    event = fields.Nested(ProviderEventArgs, required=True)

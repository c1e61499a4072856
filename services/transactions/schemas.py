"""transactions' RPC argument schemas."""

from marshmallow import Schema, fields, validate

from shared import contracts
from shared.schemas import Beneficiary, bigint

KINDS = (contracts.KIND_DEPOSIT, contracts.KIND_INTERNAL, contracts.KIND_PAYOUT)


class Source(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["card"]))
    token = fields.String(required=True, validate=validate.Length(min=1, max=128))


class TransferRequestArgs(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    amount = fields.Integer(required=True, strict=True, validate=bigint())
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$"))
    from_account_id = fields.String(load_default=None, allow_none=True)
    to_account_id = fields.String(load_default=None, allow_none=True)
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=140))
    source = fields.Nested(Source, load_default=None, allow_none=True)
    beneficiary = fields.Nested(Beneficiary, load_default=None, allow_none=True)


class CreateTransferArgs(Schema):
    owner_id = fields.UUID(required=True)
    idempotency_key = fields.String(required=True, validate=validate.Length(min=1, max=255))
    # The caller's routing key for the outcome (shared.contracts), if it waits.
    notify = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            rf"{contracts.OUTCOME_ROUTE_PATTERN}\Z", error="not a gateway outcome route"
        ),
    )


class ListArgs(Schema):
    caller_id = fields.UUID(required=True)
    account_id = fields.UUID(load_default=None, allow_none=True)
    status = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["pending", "completed", "failed"]),
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, allow_none=True)


class EndedTransfersArgs(Schema):
    after = fields.Integer(load_default=0, strict=True, validate=bigint(0))
    limit = fields.Integer(load_default=500, strict=True, validate=validate.Range(min=1, max=2000))
    settled_seconds = fields.Integer(
        load_default=60, strict=True, validate=validate.Range(min=0, max=86400)
    )


class EndedByIdArgs(Schema):
    after = fields.String(load_default="", validate=validate.Length(max=36))
    limit = fields.Integer(load_default=500, strict=True, validate=validate.Range(min=1, max=2000))


class TransferIds(Schema):
    transfer_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=2000))


class StuckArgs(Schema):
    grace_seconds = fields.Integer(
        load_default=60, strict=True, validate=validate.Range(min=0, max=86400)
    )
    limit = fields.Integer(load_default=500, strict=True, validate=validate.Range(min=1, max=2000))

"""accounts' RPC argument schemas."""

from marshmallow import Schema, fields, validate


class OpenAccountArgs(Schema):
    owner_id = fields.UUID(required=True)
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$"))
    name = fields.String(load_default=None, allow_none=True)


class OwnerRef(Schema):
    owner_id = fields.UUID(required=True)


class AccountRef(OwnerRef):
    account_id = fields.UUID(required=True)


class HistoryArgs(AccountRef):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, allow_none=True)


class CheckTransferArgs(Schema):
    owner_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["deposit", "internal", "payout"]))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$"))
    from_account_id = fields.UUID(load_default=None, allow_none=True)
    to_account_id = fields.UUID(load_default=None, allow_none=True)


class TransferRef(Schema):
    transfer_id = fields.UUID(required=True)


class RunReconciliationArgs(Schema):
    full = fields.Boolean(load_default=False, truthy={True}, falsy={False})


class DiscrepancyQuery(Schema):
    status = fields.String(
        load_default="open", validate=validate.OneOf(["open", "cleared", "resolved", "all"])
    )
    kind = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))
    limit = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1, max=1000))


class RunRef(Schema):
    run_id = fields.UUID(required=True)


class ResolveArgs(Schema):
    discrepancy_id = fields.UUID(required=True)
    resolved_by = fields.String(required=True, validate=validate.Length(min=1, max=64))
    note = fields.String(required=True, validate=validate.Length(min=1, max=500))


class DayArgs(Schema):
    day = fields.Date(required=True, format="%Y-%m-%d")

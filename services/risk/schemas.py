"""risk's RPC argument schemas."""

from marshmallow import Schema, fields, validate


class AssessmentRef(Schema):
    transfer_id = fields.UUID(required=True)


class ListAssessmentsArgs(Schema):
    account_id = fields.UUID(load_default=None, allow_none=True)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))

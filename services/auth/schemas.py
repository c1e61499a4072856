"""auth's RPC argument schemas (types only; the domain judges the values)."""

from marshmallow import Schema, fields, validate

_token = fields.String(required=True, validate=validate.Length(min=1, max=512))


class RegisterArgs(Schema):
    email = fields.String(required=True)
    password = fields.String(required=True)
    full_name = fields.String(required=True)


class LoginArgs(Schema):
    email = fields.String(required=True)
    password = fields.String(required=True, validate=validate.Length(max=1024))


class MfaVerifyArgs(Schema):
    mfa_token = _token
    code = fields.String(required=True, validate=validate.Regexp(r"^[0-9]{6}$"))


class MfaConfirmArgs(Schema):
    code = fields.String(required=True, validate=validate.Regexp(r"^[0-9]{6}$"))


class RefreshArgs(Schema):
    refresh_token = _token


class GrantRoleArgs(Schema):
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    role = fields.String(required=True)
    # The admin on whose behalf, when an operator acts for one (audited).
    granted_by = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=64)
    )

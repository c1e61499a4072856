"""HTTP wire schemas (marshmallow): they validate requests and, through
flask-smorest, generate the OpenAPI document at /openapi.json."""

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from shared.errors import InvalidInput
from shared.money import CURRENCY_DIGITS, Money
from shared.schemas import Beneficiary


class Strict(Schema):
    """Unknown fields are an error (marshmallow's default, stated here)."""


# auth ---------------------------------------------------------------------


class RegisterRequest(Strict):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True,
        validate=validate.Length(min=12, max=1024),
        metadata={"description": "At least 12 characters."},
    )
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class RegisterResponse(Schema):
    user_id = fields.UUID()
    email = fields.String()


class LoginRequest(Strict):
    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class TokensResponse(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Access token lifetime, seconds."})
    mfa_required = fields.Boolean(
        metadata={"description": "Present (true) instead of the tokens when a TOTP code is needed."}
    )
    mfa_token = fields.String(metadata={"description": "Pass to /v1/auth/mfa/verify."})


_totp_code = fields.String(
    required=True,
    validate=validate.Regexp(
        r"^[0-9]{6}$", error="Must be the 6-digit code from the authenticator app."
    ),
)


class MfaVerifyRequest(Strict):
    mfa_token = fields.String(required=True, validate=validate.Length(min=1, max=512))
    code = _totp_code


class MfaEnrollResponse(Schema):
    secret = fields.String()
    otpauth_uri = fields.String()


class MfaConfirmRequest(Strict):
    code = _totp_code


class RefreshRequest(Strict):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=512))


class MeResponse(Schema):
    user_id = fields.UUID()
    email = fields.String()
    full_name = fields.String()
    mfa_enabled = fields.Boolean()
    roles = fields.List(fields.String())


class JwksResponse(Schema):
    keys = fields.List(fields.Dict())


# accounts -------------------------------------------------------------------


class OpenAccountRequest(Strict):
    currency = fields.String(
        required=True,
        validate=validate.OneOf(
            sorted(CURRENCY_DIGITS), error="Unsupported currency; use an ISO 4217 code we support."
        ),
    )
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))


class AccountResponse(Schema):
    account_id = fields.UUID()
    currency = fields.String()
    name = fields.String()
    status = fields.String()
    balance = fields.String(metadata={"example": "12.34"})
    available_balance = fields.String(metadata={"example": "12.34"})
    created_at = fields.String(metadata={"format": "date-time"})


class AccountListResponse(Schema):
    items = fields.List(fields.Nested(AccountResponse))


class HistoryQuery(Strict):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=validate.Length(max=32))


class AccountTransaction(Schema):
    entry_id = fields.UUID()
    transfer_id = fields.UUID(allow_none=True)
    amount = fields.String(metadata={"description": "Signed: negative is money out."})
    currency = fields.String()
    balance_after = fields.String()
    description = fields.String()
    created_at = fields.String(metadata={"format": "date-time"})


class AccountTransactionsResponse(Schema):
    items = fields.List(fields.Nested(AccountTransaction))
    next_cursor = fields.String(allow_none=True)


# money movement ---------------------------------------------------------------

_currency = fields.String(
    required=True,
    validate=validate.OneOf(
        sorted(CURRENCY_DIGITS), error="Unsupported currency; use an ISO 4217 code we support."
    ),
)
_amount = fields.String(
    required=True,
    metadata={
        "example": "12.34",
        "description": "Decimal string with the currency's minor digits.",
    },
)


class _MovesMoney(Strict):
    amount = _amount
    currency = _currency

    @validates_schema
    def _amount_fits_currency(self, data, **kwargs):
        if "amount" in data and "currency" in data:
            try:
                Money.parse(data["amount"], data["currency"])
            except InvalidInput as error:
                raise ValidationError(error.errors or {"amount": [error.detail]}) from None


class CardSource(Strict):
    type = fields.String(required=True, validate=validate.OneOf(["card"]))
    token = fields.String(required=True, validate=validate.Length(min=1, max=128))


class DepositRequest(_MovesMoney):
    account_id = fields.UUID(required=True)
    source = fields.Nested(CardSource, required=True)


class TransferRequest(_MovesMoney):
    from_account_id = fields.UUID(required=True)
    to_account_id = fields.UUID(required=True)
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=140))


class PayoutRequest(_MovesMoney):
    from_account_id = fields.UUID(required=True)
    beneficiary = fields.Nested(Beneficiary, required=True)


class TransferAccepted(Schema):
    transfer_id = fields.UUID()
    status = fields.String(metadata={"example": "pending"})


class TransferStep(Schema):
    type = fields.String()
    at = fields.String(metadata={"format": "date-time"})


class TransferResponse(Schema):
    transfer_id = fields.UUID()
    kind = fields.String(metadata={"enum": ["deposit", "internal", "payout"]})
    status = fields.String(metadata={"enum": ["pending", "completed", "failed"]})
    failure_reason = fields.String(allow_none=True)
    amount = fields.String(metadata={"example": "12.34"})
    currency = fields.String()
    from_account_id = fields.UUID(allow_none=True)
    to_account_id = fields.UUID(allow_none=True)
    reference = fields.String(allow_none=True)
    created_at = fields.String(metadata={"format": "date-time"})
    updated_at = fields.String(metadata={"format": "date-time"})
    steps = fields.List(fields.Nested(TransferStep))


class TransferListQuery(Strict):
    account_id = fields.UUID(load_default=None)
    status = fields.String(
        load_default=None, validate=validate.OneOf(["pending", "completed", "failed"])
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=validate.Length(max=32))


class TransferListResponse(Schema):
    items = fields.List(fields.Nested(TransferResponse))
    next_cursor = fields.String(allow_none=True)

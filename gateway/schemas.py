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


class Pattern(validate.Regexp):
    """A regular expression the whole value must match, shown as the field's
    `pattern` in /openapi.json.

    marshmallow's Regexp uses re.match, where `$` also matches before a
    trailing newline: "+4915112345678\\n" would pass `^...$` and reach the
    services. The pattern itself stays ECMA-compatible for the document.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class StrictBoolean(fields.Boolean):
    """JSON true or false only (not "yes", 1, "on"...). Boolean(truthy={True})
    would not do: 1 == True, so 1 is in {True}."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def not_blank() -> Pattern:
    """Some text besides white space, as the services need (they fold or strip it)."""
    return Pattern(r"^\s*\S[\s\S]*$", error="Must not be blank.")


# errors ---------------------------------------------------------------------


class Problem(Schema):
    """What every error answers, as application/problem+json (RFC 9457):
    the body gateway.problems.problem writes."""

    type = fields.String(required=True, metadata={"example": "urn:fintech:problem:invalid_input"})
    title = fields.String(required=True, metadata={"example": "Unprocessable Entity"})
    status = fields.Integer(
        required=True, validate=validate.Range(min=400, max=599), metadata={"example": 422}
    )
    detail = fields.String(required=True, metadata={"example": "Invalid value for amount."})
    code = fields.String(
        required=True,
        metadata={"description": "Machine-readable reason.", "example": "invalid_input"},
    )
    correlation_id = fields.String(
        required=True,
        metadata={"description": "The X-Correlation-ID of the request: quote it to support."},
    )
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={
            "description": "Validation errors only: field -> messages (a nested "
            "field's errors as an object of its own).",
            "example": {"amount": ["EUR allows at most 2 decimal places."]},
        },
    )


# auth ---------------------------------------------------------------------


class RegisterRequest(Strict):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True,
        validate=[validate.Length(min=12, max=1024), not_blank()],
        metadata={"description": "At least 12 characters, not all white space."},
    )
    full_name = fields.String(
        required=True, validate=[validate.Length(min=1, max=200), not_blank()]
    )


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
    validate=Pattern(r"^[0-9]{6}$", error="Must be the 6-digit code from the authenticator app."),
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


def _digits_of_currencies() -> str:
    by_digits: dict[int, list[str]] = {}
    for currency, digits in sorted(CURRENCY_DIGITS.items()):
        by_digits.setdefault(digits, []).append(currency)
    return "; ".join(
        f"{digits}: {', '.join(currencies)}" for digits, currencies in sorted(by_digits.items())
    )


# The shape of shared.money's amounts, with at most as many decimals as any
# currency has; the currency's own limit is checked with it (_MovesMoney).
AMOUNT_PATTERN = rf"^(0|[1-9][0-9]{{0,17}})(\.[0-9]{{1,{max(CURRENCY_DIGITS.values())}}})?$"
_amount = fields.String(
    required=True,
    validate=Pattern(AMOUNT_PATTERN, error='Must be a decimal string such as "12.34".'),
    metadata={
        "example": "12.34",
        "description": "A decimal string greater than zero, with at most the "
        f"currency's minor digits ({_digits_of_currencies()}). Not a JSON number.",
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
    token = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=128), not_blank()],
        metadata={"example": "tok_ok"},
    )


class DepositRequest(_MovesMoney):
    account_id = fields.UUID(required=True)
    source = fields.Nested(CardSource, required=True)


class TransferRequest(_MovesMoney):
    from_account_id = fields.UUID(required=True)
    to_account_id = fields.UUID(required=True)
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=140))


# An IBAN as shared.iban reads it: white space anywhere, either case; its
# check digits are shared.schemas.Beneficiary's to verify.
IBAN_PATTERN = r"^\s*[A-Za-z]\s*[A-Za-z]\s*[0-9]\s*[0-9](\s*[A-Za-z0-9]){11,30}\s*$"


class PayoutBeneficiary(Beneficiary):
    """shared.schemas.Beneficiary (the one rule), its shape shown in /openapi.json."""

    name = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=140), not_blank()],
        metadata={"example": "Landlord"},
    )
    iban = fields.String(
        required=True,
        validate=[
            validate.Length(min=15, max=42),
            Pattern(IBAN_PATTERN, error="Not a valid IBAN."),
        ],
        metadata={
            "description": "ISO 13616, with valid check digits; spaces allowed.",
            "example": "DE89370400440532013000",
        },
    )


class PayoutRequest(_MovesMoney):
    from_account_id = fields.UUID(required=True)
    beneficiary = fields.Nested(PayoutBeneficiary, required=True)


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

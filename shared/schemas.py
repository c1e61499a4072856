"""Loading RPC arguments through marshmallow, failing as InvalidInput, and
the argument shapes that more than one service (or the gateway) accepts."""

import re

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

from shared import iban
from shared.errors import InvalidInput

_INSTANCES: dict[type[Schema], Schema] = {}

# The largest value a BIGINT column holds: an id, cursor, version or amount
# past it would reach the database and fail there (an OverflowError, a 500).
BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1

# A risk tier's name: the rules name tiers so (services/risk/schemas.py), and
# the gateway refuses any other at its edge (gateway/blueprints/risk_admin.py).
TIER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
TIER_NAME_ERROR = "Must be 1-32 of a-z, 0-9, '_' or '-', starting with a letter."


def bigint(minimum: int = 1) -> validate.Range:
    """An integer argument that fits the BIGINT columns it is compared with."""
    return validate.Range(min=minimum, max=BIGINT_MAX)


def integer(minimum: int = 1) -> validate.Range:
    """An integer argument that fits the INTEGER columns it is compared with."""
    return validate.Range(min=minimum, max=INTEGER_MAX)


def load(schema: type[Schema] | Schema, data: dict) -> dict:
    """`data` through the schema (a class: one instance of it is kept, since
    building a schema costs more than loading a few fields with it)."""
    if isinstance(schema, type):
        schema = _INSTANCES.get(schema) or _INSTANCES.setdefault(schema, schema())
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = exc.normalized_messages()
        field = next(iter(errors), "")
        raise InvalidInput("invalid_input", f"Invalid value for {field}.", errors) from None


# A position (a posting's id, an event's position) as a page cursor: at most
# 18 digits fits any 64-bit integer column.
_POSITION = re.compile(r"[0-9]{1,18}")


def position_cursor(cursor: str | None) -> int | None:
    """The position a keyset page continues after (None: the first page)."""
    if not cursor:
        return None
    if not _POSITION.fullmatch(cursor):  # match() would take a trailing newline
        raise InvalidInput(
            "invalid_cursor",
            "The cursor is not valid.",
            {"cursor": ["Not a cursor returned by this endpoint."]},
        )
    return int(cursor)


class Beneficiary(Schema):
    """Who a payout pays: the one rule for it wherever it is accepted (the
    gateway, transactions, payments). The IBAN must pass the mod-97 check;
    both fields are loaded in the form compared and sent on (name's white
    space folded, IBAN without spaces, upper case), so a re-sent payout
    matches the first one."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=140))
    iban = fields.String(required=True, validate=validate.Length(max=42))

    @validates("name")
    def _not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("Must not be blank.")

    @validates("iban")
    def _valid_iban(self, value, **kwargs):
        if not iban.is_valid(value):
            raise ValidationError("Not a valid IBAN.")

    @post_load
    def _normalise(self, data, **kwargs):
        return {"name": " ".join(data["name"].split()), "iban": iban.normalise(data["iban"])}

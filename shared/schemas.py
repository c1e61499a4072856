"""Loading RPC arguments through marshmallow, failing as InvalidInput."""

import re

from marshmallow import Schema, ValidationError

from shared.errors import InvalidInput

_INSTANCES: dict[type[Schema], Schema] = {}


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

"""Loading RPC arguments through marshmallow, failing as InvalidInput."""

from marshmallow import Schema, ValidationError

from shared.errors import InvalidInput


def load(schema: Schema, data: dict) -> dict:
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = exc.normalized_messages()
        field = next(iter(errors), "")
        raise InvalidInput("invalid_input", f"Invalid value for {field}.", errors) from None

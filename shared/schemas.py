"""Loading RPC arguments through marshmallow, failing as InvalidInput."""

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

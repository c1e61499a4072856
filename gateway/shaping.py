"""Response bodies shaped by their schema, without marshmallow's per-field work.

The services answer in JSON-ready values (strings, ids as strings, ISO
times, amounts already formatted), so dumping them through marshmallow
only selects the schema's fields, field by field through its generic
machinery: about a third of the gateway's CPU for a page of 50
transfers. `shaped` does that selection from a plan made once per schema:
the same keys, nested the same way, as `Schema().dump` would give (a test
holds them equal). A schema with a field that does more than pass a value
through (a date it formats, a number it converts) is dumped by
marshmallow as before.

The schemas stay the contract: they still document the responses in
/openapi.json and decide their fields.
"""

import functools
from collections.abc import Mapping

from marshmallow import Schema, fields

# Fields whose dump of a JSON-ready value is that value (as a string for
# the string kinds).
_AS_TEXT = (fields.String, fields.UUID)


@functools.cache
def _plan(schema: type[Schema]) -> tuple | None:
    """(key, attribute, how, nested plan) per dumped field; None if one is not
    a plain pass-through."""
    plan = []
    for name, field in schema().dump_fields.items():
        key, attribute = field.data_key or name, field.attribute or name
        if isinstance(field, fields.Nested) and not field.many:
            nested = _plan(type(field.schema))
            if nested is None:
                return None
            plan.append((key, attribute, "one", nested))
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            nested = _plan(type(field.inner.schema))
            if nested is None:
                return None
            plan.append((key, attribute, "many", nested))
        elif type(field) in _AS_TEXT:
            plan.append((key, attribute, "text", None))
        else:
            return None
    return tuple(plan)


def _apply(plan: tuple, data: Mapping) -> dict:
    shaped = {}
    for key, attribute, how, nested in plan:
        if attribute not in data:
            continue  # marshmallow leaves out what the data does not have
        value = data[attribute]
        if value is None:
            shaped[key] = None
        elif how == "text":
            shaped[key] = value if type(value) is str else str(value)
        elif how == "one":
            shaped[key] = _apply(nested, value)
        else:
            shaped[key] = [_apply(nested, item) for item in value]
    return shaped


def shaped(schema: type[Schema], data: Mapping) -> dict:
    """What `schema().dump(data)` gives, made faster for pass-through schemas."""
    plan = _plan(schema)
    if plan is None:
        return schema().dump(data)
    return _apply(plan, data)

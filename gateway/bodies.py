"""Request bodies: JSON that cannot be read is a 400 problem, whatever the reason.

Python's json parser gives up on deep nesting with a RecursionError (a
60 KB body of `[` is enough), which is not the ValueError webargs and our
webhook endpoint expect, so it was a 500 with a long traceback per request.
It is raised after about a thousand levels, so refusing it costs little.

A NUL character (\\u0000 in JSON, %00 in a query) is valid JSON and a
valid Python string, but PostgreSQL's text cannot hold one: a note or a
name with it failed in the database, a 500. No field of the API needs it,
so any body or query with one is refused as invalid input (422).
"""

import json
from collections.abc import Iterator, Mapping

import flask_smorest
from marshmallow import ValidationError
from webargs.flaskparser import FlaskParser

NUL_MESSAGE = "Must not contain the NUL character (\\u0000)."


def _too_deep() -> json.JSONDecodeError:
    return json.JSONDecodeError("nested too deeply", "", 0)


def loads(body: bytes | str):
    """json.loads, with too deep a nesting reported as the ValueError it is."""
    try:
        return json.loads(body)
    except RecursionError:
        raise _too_deep() from None


def _with_nul(value, path: tuple = ()) -> Iterator[tuple]:
    """The path of each string in a JSON value (or query) that holds a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, Mapping):
        for key in value:
            if isinstance(key, str) and "\x00" in key:
                yield (*path, key)
            else:
                yield from _with_nul(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _with_nul(item, (*path, index))


def _nested(paths: list[tuple]) -> dict:
    """{field: {nested field: [message]}} as marshmallow nests its errors."""
    errors: dict = {}
    for path in paths:
        *parents, last = path or ("body",)
        node = errors
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = [NUL_MESSAGE]
    return errors


class _Parser(FlaskParser):
    def _load_location_data(self, *, schema, req, location):
        data = super()._load_location_data(schema=schema, req=req, location=location)
        paths = list(_with_nul(data))
        if paths:
            raise ValidationError(_nested(paths))
        return data

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            # What webargs does with any body it cannot decode: 400 "Invalid
            # JSON body." (raising JSONDecodeError would not do: webargs
            # takes one without a document for an empty body).
            self._handle_invalid_json_error(_too_deep(), req)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, reading bodies with the parser above."""

    ARGUMENTS_PARSER = _Parser()

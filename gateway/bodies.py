"""Request bodies: JSON that cannot be read is a 400 problem, whatever the reason.

Python's json parser gives up on deep nesting with a RecursionError (a
60 KB body of `[` is enough), which is not the ValueError webargs and our
webhook endpoint expect, so it was a 500 with a long traceback per request.
It is raised after about a thousand levels, so refusing it costs little.
"""

import json

import flask_smorest
from webargs.flaskparser import FlaskParser


def _too_deep() -> json.JSONDecodeError:
    return json.JSONDecodeError("nested too deeply", "", 0)


def loads(body: bytes | str):
    """json.loads, with too deep a nesting reported as the ValueError it is."""
    try:
        return json.loads(body)
    except RecursionError:
        raise _too_deep() from None


class _Parser(FlaskParser):
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

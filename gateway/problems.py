"""Every error leaves the gateway as application/problem+json (RFC 9457).

ServiceErrors map to HTTP through shared.errors.HTTP_STATUS (the one
table); HTTP errors raised by Flask, webargs or Flask-Limiter keep their
status; anything else is a 500 that reveals nothing but the correlation id.
"""

import logging

from flask import Flask, Response, json, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import correlation
from shared.errors import ServiceError, http_status

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    423: "locked",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: dict | None = None,
    headers: dict | None = None,
) -> Response:
    body = {
        "type": f"urn:fintech:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "correlation_id": correlation.current(),
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_webargs(messages: dict) -> dict:
    """webargs nests errors by location ({"json": {...}}); clients want fields."""
    flat: dict = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            flat.update(fields)
        else:
            flat[location] = fields
    return flat


# Seconds a client should wait before retrying a 503 (a service restarting,
# the broker reconnecting): long enough not to hammer, short enough to recover.
UNAVAILABLE_RETRY_AFTER = "5"


def handle_service_error(error: ServiceError) -> Response:
    status = http_status(error)
    return problem(status, error.code, error.title, error.detail, error.errors)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    title = error.name
    detail = error.description or title
    errors = None
    data = getattr(error, "data", None) or {}
    if "messages" in data:  # webargs validation failure
        errors = _flatten_webargs(data["messages"])
        if status == 400:
            code, detail = "malformed_json", "The request body is not valid JSON."
        else:
            field = next(iter(errors), "body")
            detail = f"Invalid value for {field}."
    headers = dict(data.get("headers") or {})
    if isinstance(error, RateLimitExceeded):
        detail = f"Rate limit exceeded ({error.description}). Retry later."
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        headers["Allow"] = ", ".join(allowed)
    return problem(status, code, title, detail, errors, headers)


# Rejected bodies up to this size are read and discarded so the client's
# keep-alive connection stays usable (gunicorn silently closes a connection
# whose body was left unread); larger ones just lose the connection.
DRAIN_LIMIT = 1024 * 1024


def handle_too_large(error: RequestEntityTooLarge) -> Response:
    remaining = min(request.content_length or 0, DRAIN_LIMIT)
    stream = request.environ["wsgi.input"]
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        remaining -= len(chunk)
    return handle_http_exception(error)


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem(
        500,
        "internal_error",
        "Internal Server Error",
        "Something went wrong on our side; quote the correlation id.",
    )


def init_app(app: Flask) -> None:
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(RequestEntityTooLarge, handle_too_large)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

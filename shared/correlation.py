"""Correlation ids: HTTP header -> nameko context data -> RPC, events, logs.

The id of the work in progress lives in a context variable. Each nameko
worker and each gateway request runs in its own greenlet or thread, and
each of those has its own context, so ids never leak between requests.
"""

import contextvars
import re
import uuid

HEADER = "X-Correlation-ID"
CONTEXT_KEY = "correlation_id"

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
_service: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)

# Accept what clients commonly send (UUIDs, ULIDs, trace ids); refuse
# anything that could break a log line or a header.
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_id() -> str:
    return str(uuid.uuid4())


def sanitize(candidate: str | None) -> str:
    """The client's id when it is safe to echo, else a fresh one."""
    if candidate and _VALID.match(candidate):
        return candidate
    return new_id()


def current() -> str | None:
    return _current.get()


def bind(correlation_id: str) -> contextvars.Token:
    return _current.set(correlation_id)


def reset(token: contextvars.Token) -> None:
    _current.reset(token)


def set_service(name: str) -> None:
    _service.set(name)


def service() -> str | None:
    return _service.get()

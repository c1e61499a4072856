"""Typed errors that cross RPC and become problem+json at the gateway.

Standard library only, so domain modules can raise them. A service raises
one of the categories below with a machine-readable `code`; nameko carries
the category across RPC (see shared.rpc) and the gateway turns it into an
HTTP status through HTTP_STATUS, the one table of the platform.
"""


class ServiceError(Exception):
    """Base of every error a caller is expected to handle."""

    title = "Service error"

    def __init__(self, code: str, detail: str = "", errors: dict | None = None):
        # args must stay JSON-safe and positional: nameko rebuilds the
        # exception on the caller's side as cls(*args), and turns None into
        # the string "None" on the way, so "no field errors" travels as {}.
        errors = errors if isinstance(errors, dict) else {}
        super().__init__(code, detail, errors)
        self.code = code
        self.detail = detail or code
        self.errors = errors or None

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class InvalidInput(ServiceError):
    title = "Invalid input"


class BadRequest(ServiceError):
    title = "Bad request"


class Unauthenticated(ServiceError):
    title = "Unauthenticated"


class Forbidden(ServiceError):
    title = "Forbidden"


class NotFound(ServiceError):
    title = "Not found"


class Conflict(ServiceError):
    title = "Conflict"


class Locked(ServiceError):
    title = "Locked"


class TooManyRequests(ServiceError):
    title = "Too many requests"


class Unavailable(ServiceError):
    title = "Service unavailable"


HTTP_STATUS: dict[type[ServiceError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    Locked: 423,
    TooManyRequests: 429,
    Unavailable: 503,
}

ERROR_CATEGORIES: tuple[type[ServiceError], ...] = (ServiceError, *HTTP_STATUS)


def http_status(error: ServiceError) -> int:
    for category in type(error).__mro__:
        if category in HTTP_STATUS:
            return HTTP_STATUS[category]
    return 500

"""Errors of calls to outside providers (payment, email, SMS, push). Stdlib only.

Unavailable: no definitive answer this time, so the caller tries again
later (with the same idempotency key where there is one). Rejected: the
provider refused the request itself and will refuse it again as it is.
Transient: an Unavailable worth another attempt right away (what tenacity
retries: connection errors, timeouts, 5xx, 429).
"""


class ProviderError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail or code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class ProviderUnavailable(ProviderError):
    """No definitive answer: try again later."""


class ProviderRejected(ProviderError):
    """Refused for good: the same request will be refused again."""


class Transient(ProviderUnavailable):
    """Worth another attempt soon."""

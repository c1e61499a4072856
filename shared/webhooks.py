"""Signed webhooks: HMAC-SHA256 over "<timestamp>.<raw body>".

Standard library only. The sender puts `t=<unix seconds>,v1=<hex digest>`
in the SIGNATURE_HEADER; a receiver recomputes the digest over the exact
bytes it received, compares in constant time, and refuses a timestamp
further than `tolerance` seconds from its clock, so a captured request
cannot be replayed later. Several v1= entries may be sent (a sender
rotating its secret signs with both).
"""

import hashlib
import hmac

from shared.errors import Unauthenticated

SIGNATURE_HEADER = "Sandbox-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300

_MAX_HEADER = 1024


def _digest(secret: str | bytes, body: bytes, timestamp: int) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return f"t={int(timestamp)},{SCHEME}={_digest(secret, body, timestamp)}"


def verify(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Accept `body` only if `header` signs it with `secret`, recently.

    Raises Unauthenticated("invalid_signature") for a missing, malformed,
    wrong or expired signature; the caller learns nothing about which.
    """
    if not secret:
        raise _invalid()  # an empty key would make every forger's HMAC valid
    timestamp, candidates = _parse(header)
    if abs(now - timestamp) > tolerance:
        raise _invalid()
    expected = _digest(secret, body, timestamp).encode()
    # Compare against every candidate, so timing does not tell which matched
    # (as bytes: compare_digest refuses non-ASCII str, and headers may hold any).
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise _invalid()


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not header or len(header) > _MAX_HEADER:
        raise _invalid()
    timestamp = None
    candidates = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise _invalid()
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise _invalid()
            timestamp = int(value)
        elif name == SCHEME:
            candidates.append(value)
        # Other schemes are ignored: a sender may add newer ones first.
    if timestamp is None or not candidates:
        raise _invalid()
    return timestamp, candidates


def _invalid() -> Unauthenticated:
    return Unauthenticated("invalid_signature", "The webhook signature is missing or invalid.")

"""Rules of identity and sessions. Standard library only."""

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import InvalidInput

MIN_PASSWORD_LENGTH = 12
# Long enough for any passphrase, short enough that hashing it is no DoS.
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 200

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def normalise_email(raw: str) -> str:
    """Case-folded, trimmed, NFKC-normalised address; 422 when malformed."""
    email = unicodedata.normalize("NFKC", raw or "").strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput(
            "invalid_email", "Not a valid email address.", {"email": ["Not a valid email address."]}
        )
    return email


def check_password_policy(password: str) -> None:
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"Must be at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"Must be at most {MAX_PASSWORD_LENGTH} characters.")
    if password.strip() == "":
        problems.append("Must not be blank.")
    if problems:
        raise InvalidInput("weak_password", problems[0], {"password": problems})


def check_full_name(full_name: str) -> str:
    name = " ".join((full_name or "").split())
    if not name or len(name) > MAX_NAME_LENGTH:
        message = f"Must be 1 to {MAX_NAME_LENGTH} characters."
        raise InvalidInput("invalid_full_name", message, {"full_name": [message]})
    return name


@dataclass(frozen=True)
class LockoutPolicy:
    """After `max_failures` wrong passwords in a row, refuse logins for a while."""

    max_failures: int = 5
    lock_for: timedelta = timedelta(minutes=15)

    def is_locked(self, locked_until: datetime | None, now: datetime) -> bool:
        return locked_until is not None and locked_until > now

    def lock_after(self, failures: int, now: datetime) -> datetime | None:
        """When the failure count reaches the limit: the time the lock ends."""
        return now + self.lock_for if failures >= self.max_failures else None


@dataclass(frozen=True)
class TokenPolicy:
    access_ttl: timedelta = timedelta(minutes=5)
    refresh_ttl: timedelta = timedelta(days=14)
    session_max_age: timedelta = timedelta(days=30)
    mfa_challenge_ttl: timedelta = timedelta(minutes=5)
    mfa_max_attempts: int = 5


def new_opaque_token() -> str:
    """A bearer secret for refresh and MFA tokens (256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored instead of the token: a leaked table grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


DEFAULT_ROLE = "customer"
ROLES = frozenset({"customer", "admin"})

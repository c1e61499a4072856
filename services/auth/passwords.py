"""Argon2id password hashing, run off the eventlet hub.

Hashing costs tens of milliseconds of CPU by design. argon2-cffi releases
the GIL while it works, so running it in eventlet's thread pool keeps every
other worker of the service responsive during a login.
"""

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so that a wrong email costs
    the same time as a wrong password and the response time reveals nothing."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _offload(func, *args):
    import eventlet.patcher

    if eventlet.patcher.is_monkey_patched("thread"):
        from eventlet import tpool

        return tpool.execute(func, *args)
    return func(*args)


def hash_password(password: str) -> str:
    return _offload(_hasher.hash, password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _offload(_hasher.verify, password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)

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
    return _offload(_hasher.hash, secrets.token_urlsafe(16))


@functools.cache
def _hashing_slots():
    """Concurrent hashes per process. Each argon2 hash holds 64 MiB while it
    runs: ten at once would take 640 MiB, so a login burst could get the
    service killed for memory. Made on first use, after monkey patching, so
    waiting for a slot parks the greenthread, not the process."""
    import threading

    from shared.config import env_int

    return threading.BoundedSemaphore(env_int("AUTH_HASH_CONCURRENCY", 2, minimum=1))


def _offload(func, *args):
    import eventlet.patcher

    from shared.errors import Unavailable

    slots = _hashing_slots()
    if not slots.acquire(timeout=30):
        raise Unavailable("auth_busy", "Too many logins at once; retry shortly.")
    try:
        if eventlet.patcher.is_monkey_patched("thread"):
            from eventlet import tpool

            return tpool.execute(func, *args)
        return func(*args)
    finally:
        slots.release()


def hash_password(password: str) -> str:
    return _offload(_hasher.hash, password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _offload(_hasher.verify, password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)

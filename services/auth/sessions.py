"""auth's sessions: login, the tokens of a session, refresh, logout and revocations.

Slow or security-sensitive steps (argon2) run outside any transaction so no
database connection is held while the CPU works. Outcomes that must be
recorded *and* refused (a reused refresh token, a failed login) commit
first and raise after the transaction has ended.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.auth import passwords
from services.auth.domain import (
    LockoutPolicy,
    TokenPolicy,
    new_opaque_token,
    normalise_email,
    token_digest,
)
from services.auth.keys import KeyRing
from services.auth.models import AuthSession, MfaChallenge, RefreshToken, User
from services.auth.users import new_id, roles
from shared import audit, contracts
from shared.database import UnitOfWork
from shared.errors import InvalidInput, Locked, NotFound, Unauthenticated
from shared.outbox import record_event


@dataclass(frozen=True)
class AuthSettings:
    tokens: TokenPolicy = field(default_factory=TokenPolicy)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("invalid_credentials", "Email or password is wrong.")


def locked(until: datetime) -> Locked:
    return Locked("account_locked", f"Too many failed logins. Try again after {until.isoformat()}.")


def login(
    uow: UnitOfWork, keys: KeyRing, settings: AuthSettings, email: str, password: str, now: datetime
) -> dict:
    try:
        email = normalise_email(email)
    except InvalidInput:
        email = None
    with uow.commit_on_exit() as session:
        user_id = session.scalar(select(User.id).where(User.email == email)) if email else None
    if user_id is None:
        # Verify anyway: an unknown email costs what a wrong password costs.
        passwords.verify_password(None, password)
        raise _invalid_credentials()
    failures = _reserve_attempt(uow, settings.lockout, user_id, now)
    with uow.commit_on_exit() as session:
        password_hash = session.scalar(select(User.password_hash).where(User.id == user_id))
    if not passwords.verify_password(password_hash, password):
        with uow.commit_on_exit() as session:
            locked_until = after_failure(
                session, settings.lockout, user_id, failures, now, factor="password"
            )
        if locked_until:
            raise locked(locked_until)
        raise _invalid_credentials()

    with uow.commit_on_exit() as session:
        mfa_enabled = session.scalar(select(User.mfa_enabled).where(User.id == user_id))
        # A password alone ends the login only without MFA: then the count of
        # failures starts again. With MFA, only this attempt's reservation is
        # given back; wrong codes keep counting until a code is right.
        # Either way, not if a concurrent failure locked the user meanwhile.
        settled = session.execute(
            update(User)
            .where(User.id == user_id, _not_locked(now))
            .values(failed_logins=User.failed_logins - 1 if mfa_enabled else 0)
        ).rowcount
        if not settled:
            raise locked(session.scalar(select(User.locked_until).where(User.id == user_id)))
        user = session.get(User, user_id)
        if passwords.needs_rehash(user.password_hash):
            user.password_hash = passwords.hash_password(password)
        if user.mfa_enabled:
            return _start_mfa_challenge(session, settings.tokens, user.id, now)
        return open_session(session, keys, settings.tokens, user.id, now, mfa=False)


def _not_locked(now: datetime):
    return or_(User.locked_until.is_(None), User.locked_until <= now)


def _reserve_attempt(uow: UnitOfWork, policy: LockoutPolicy, user_id: str, now: datetime) -> int:
    """Count this attempt before the (slow) password check, atomically.

    Concurrent guesses are each counted up front, so a burst cannot get
    more than `max_failures` passwords checked; once the limit is reached,
    further attempts are refused without checking anything.
    """
    with uow.commit_on_exit() as session:
        failures = session.execute(
            update(User)
            .where(User.id == user_id, _not_locked(now), User.failed_logins < policy.max_failures)
            .values(failed_logins=User.failed_logins + 1)
            .returning(User.failed_logins)
        ).scalar_one_or_none()
        if failures is None:
            locked_until = session.scalar(select(User.locked_until).where(User.id == user_id))
    if failures is None:
        raise locked(locked_until if policy.is_locked(locked_until, now) else now + policy.lock_for)
    return failures


def after_failure(
    session: Session,
    policy: LockoutPolicy,
    user_id: str,
    failures: int,
    now: datetime,
    factor: str,
) -> datetime | None:
    """Lock the user when `failures` reaches the limit; announce the failure."""
    locked_until = policy.lock_after(failures, now)
    if locked_until:
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(locked_until=locked_until, failed_logins=0)
        )
    record_event(
        session,
        contracts.LOGIN_FAILED,
        {
            "user_id": user_id,
            "failures": failures,
            "factor": factor,
            "locked_until": locked_until.isoformat() if locked_until else None,
        },
    )
    return locked_until


def _new_token(session: Session, row_type, ttl: timedelta, now: datetime, **columns) -> str:
    """A new opaque token, stored as its digest only (in a row of `row_type`)."""
    token = new_opaque_token()
    session.add(
        row_type(
            id=new_id(),
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + ttl,
            **columns,
        )
    )
    return token


def _start_mfa_challenge(
    session: Session, policy: TokenPolicy, user_id: str, now: datetime
) -> dict:
    token = _new_token(
        session, MfaChallenge, policy.mfa_challenge_ttl, now, user_id=user_id, attempts=0
    )
    return {"mfa_required": True, "mfa_token": token}


def open_session(
    session: Session, keys: KeyRing, policy: TokenPolicy, user_id: str, now: datetime, mfa: bool
) -> dict:
    session_id = new_id()
    session.add(
        AuthSession(
            id=session_id, user_id=user_id, created_at=now, expires_at=now + policy.session_max_age
        )
    )
    session.flush()
    record_event(
        session,
        contracts.LOGIN_SUCCEEDED,
        {"user_id": user_id, "session_id": session_id, "mfa": mfa},
    )
    return _issue_tokens(session, keys, policy, user_id, session_id, now)


def _issue_tokens(
    session: Session,
    keys: KeyRing,
    policy: TokenPolicy,
    user_id: str,
    session_id: str,
    now: datetime,
) -> dict:
    refresh_token = _new_token(
        session, RefreshToken, policy.refresh_ttl, now, session_id=session_id
    )
    issued_at = int(now.timestamp())
    ttl = int(policy.access_ttl.total_seconds())
    access_token = keys.sign(
        {
            "iss": contracts.TOKEN_ISSUER,
            "aud": contracts.TOKEN_AUDIENCE,
            "sub": user_id,
            "sid": session_id,
            "roles": roles(session, user_id),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl,
            "jti": new_id(),
        }
    )
    return {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": ttl,
    }


def refresh(
    uow: UnitOfWork,
    keys: KeyRing,
    settings: AuthSettings,
    refresh_token: str,
    now: datetime,
    caller: str | None = None,
) -> dict:
    with uow.commit_on_exit() as session:
        token = session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_digest(refresh_token))
        )
        if token is None:
            raise Unauthenticated("invalid_refresh_token", "The refresh token is not valid.")
        # Claim the token atomically: of two concurrent uses, exactly one wins.
        claimed = session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        ).rowcount
        auth_session = session.get(AuthSession, token.session_id)
        if not claimed:
            # Reuse means the token leaked: end the whole family (the system
            # decides this, on nobody's behalf).
            _revoke(session, auth_session, "refresh_token_reused", now, audit.Actor(caller))
            tokens = None
        elif (
            auth_session.revoked_at is not None
            or auth_session.expires_at <= now
            or token.expires_at <= now
        ):
            raise Unauthenticated("invalid_refresh_token", "The refresh token is not valid.")
        else:
            tokens = _issue_tokens(
                session, keys, settings.tokens, auth_session.user_id, auth_session.id, now
            )
    if tokens is None:
        raise Unauthenticated(
            "refresh_token_reused", "This refresh token was already used; the session is revoked."
        )
    return tokens


def _revoke(
    session: Session, auth_session: AuthSession, reason: str, now: datetime, actor: audit.Actor
) -> None:
    """End a session (every revocation comes through here: it is audited)."""
    if auth_session.revoked_at is not None:
        return
    auth_session.revoked_at = now
    auth_session.revoked_reason = reason
    audit.record(
        session,
        audit.SESSION_REVOKED,
        subject=auth_session.id,
        actor=actor,
        at=now,
        details={"user_id": auth_session.user_id, "reason": reason},
    )
    record_event(
        session,
        contracts.SESSION_REVOKED,
        {
            "session_id": auth_session.id,
            "user_id": auth_session.user_id,
            "reason": reason,
            "revoked_at": now.isoformat(),
        },
    )


def logout(
    uow: UnitOfWork, user_id: str, session_id: str, now: datetime, caller: str | None = None
) -> None:
    """The user ends their own session (`user_id` as the caller vouches for it)."""
    with uow.commit_on_exit() as session:
        auth_session = session.get(AuthSession, session_id)
        if auth_session is None or auth_session.user_id != user_id:
            raise NotFound("session_not_found", "No such session.")
        _revoke(session, auth_session, "logout", now, audit.Actor(caller, user_id))


def revoked_sessions(uow: UnitOfWork, settings: AuthSettings, now: datetime) -> list[dict]:
    """Sessions revoked recently enough that their access tokens may still live."""
    horizon = now - settings.tokens.access_ttl
    with uow.commit_on_exit() as session:
        rows = session.execute(
            select(AuthSession.id, AuthSession.revoked_at).where(AuthSession.revoked_at >= horizon)
        ).all()
    return [{"session_id": sid, "revoked_at": at.isoformat()} for sid, at in rows]

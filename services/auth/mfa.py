"""auth's MFA: enrolling a TOTP secret, confirming it, and the second step of a login."""

import hmac
from datetime import datetime

import pyotp
from sqlalchemy import or_, select, update

from services.auth.domain import token_digest
from services.auth.keys import KeyRing
from services.auth.models import MfaChallenge, User
from services.auth.sessions import AuthSettings, after_failure, locked, open_session
from services.auth.users import get_user
from shared import contracts
from shared.database import UnitOfWork
from shared.errors import Conflict, InvalidInput, Unauthenticated
from shared.outbox import record_event

TOTP_ISSUER = "fintech-services"


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The TOTP time step `code` belongs to (clock drift of one step allowed)."""
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.at(step * totp.interval), code):
            return step
    return None


def enroll_mfa(uow: UnitOfWork, user_id: str) -> dict:
    with uow.commit_on_exit() as session:
        user = get_user(session, user_id)
        if user.mfa_enabled:
            raise Conflict("mfa_already_enabled", "MFA is already enabled for this user.")
        secret = pyotp.random_base32()
        user.mfa_pending_secret = secret
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
    return {"secret": secret, "otpauth_uri": uri}


def confirm_mfa(uow: UnitOfWork, user_id: str, code: str, now: datetime) -> None:
    with uow.commit_on_exit() as session:
        user = get_user(session, user_id)
        if user.mfa_enabled:
            raise Conflict("mfa_already_enabled", "MFA is already enabled for this user.")
        if not user.mfa_pending_secret:
            raise Conflict("mfa_not_enrolled", "Start with POST /v1/auth/mfa/enroll.")
        step = _matching_step(user.mfa_pending_secret, code, now)
        if step is None:
            raise InvalidInput(
                "invalid_mfa_code",
                "The code is wrong or expired.",
                {"code": ["The code is wrong or expired."]},
            )
        user.mfa_secret, user.mfa_pending_secret = user.mfa_pending_secret, None
        user.mfa_enabled = True
        user.mfa_last_step = step
        record_event(session, contracts.MFA_ENABLED, {"user_id": user_id})


def verify_mfa(
    uow: UnitOfWork, keys: KeyRing, settings: AuthSettings, mfa_token: str, code: str, now: datetime
) -> dict:
    refused = Unauthenticated("invalid_mfa", "The MFA token or code is wrong or expired.")
    locked_until = None
    with uow.commit_on_exit() as session:
        challenge = session.scalar(
            select(MfaChallenge)
            .where(MfaChallenge.token_hash == token_digest(mfa_token))
            .with_for_update()
        )
        if (
            challenge is None
            or challenge.consumed_at is not None
            or challenge.expires_at <= now
            or challenge.attempts >= settings.tokens.mfa_max_attempts
        ):
            raise refused
        user = session.get(User, challenge.user_id)
        if settings.lockout.is_locked(user.locked_until, now):
            raise locked(user.locked_until)
        step = _matching_step(user.mfa_secret, code, now)
        # Claim the time step atomically: a code is accepted once, even when
        # two challenges present it at the same moment.
        accepted = (
            step is not None
            and session.execute(
                update(User)
                .where(
                    User.id == user.id, or_(User.mfa_last_step.is_(None), User.mfa_last_step < step)
                )
                .values(mfa_last_step=step)
            ).rowcount
            == 1
        )
        if accepted:
            challenge.consumed_at = now
            user.failed_logins = 0
            tokens = open_session(session, keys, settings.tokens, user.id, now, mfa=True)
        else:
            tokens = None
            challenge.attempts += 1
            # Wrong codes count toward the same lockout as wrong passwords:
            # a stolen password does not buy unlimited guesses.
            failures = session.execute(
                update(User)
                .where(User.id == user.id)
                .values(failed_logins=User.failed_logins + 1)
                .returning(User.failed_logins)
            ).scalar_one()
            locked_until = after_failure(
                session, settings.lockout, user.id, failures, now, factor="totp"
            )
    if tokens is None:  # raised after commit: the failed attempt stays counted
        if locked_until:
            raise locked(locked_until)
        raise refused
    return tokens

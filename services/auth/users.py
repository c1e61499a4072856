"""auth's users: registration, who a user is, and their roles."""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.auth import passwords
from services.auth.domain import (
    DEFAULT_ROLE,
    ROLES,
    check_full_name,
    check_password_policy,
    normalise_email,
)
from services.auth.models import AuthSession, User, UserRole
from shared import audit, contracts
from shared.database import UnitOfWork
from shared.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from shared.outbox import record_event


def new_id() -> str:
    return str(uuid.uuid4())


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", "No such user.")
    return user


def roles(session: Session, user_id: str) -> list[str]:
    return sorted(session.scalars(select(UserRole.role).where(UserRole.user_id == user_id)))


def register(uow: UnitOfWork, email: str, password: str, full_name: str, now: datetime) -> dict:
    email = normalise_email(email)
    check_password_policy(password)
    full_name = check_full_name(full_name)
    password_hash = passwords.hash_password(password)
    user_id = new_id()
    try:
        with uow.commit_on_exit() as session:
            if session.scalar(select(User.id).where(User.email == email)):
                raise _email_taken()
            session.add(
                User(
                    id=user_id,
                    email=email,
                    password_hash=password_hash,
                    full_name=full_name,
                    created_at=now,
                    failed_logins=0,
                    mfa_enabled=False,
                )
            )
            session.flush()
            session.add(UserRole(user_id=user_id, role=DEFAULT_ROLE))
            record_event(
                session,
                contracts.USER_REGISTERED,
                {"user_id": user_id, "email": email, "full_name": full_name},
            )
    except IntegrityError:
        raise _email_taken() from None  # a concurrent registration won the race
    return {"user_id": user_id, "email": email}


def _email_taken() -> Conflict:
    return Conflict("email_taken", "An account with this email already exists.")


def me(uow: UnitOfWork, user_id: str, session_id: str, now: datetime) -> dict:
    with uow.commit_on_exit() as session:
        auth_session = session.get(AuthSession, session_id)
        if (
            auth_session is None
            or auth_session.user_id != user_id
            or auth_session.revoked_at is not None
            or auth_session.expires_at <= now
        ):
            raise Unauthenticated("session_revoked", "This session has ended.")
        user = get_user(session, user_id)
        return {
            "user_id": user.id,
            "email": user.email,
            "full_name": user.full_name,
            "mfa_enabled": user.mfa_enabled,
            "roles": roles(session, user.id),
        }


def grant_role(
    uow: UnitOfWork,
    user_id: str,
    role: str,
    now: datetime,
    caller: str | None = None,
    granted_by: str | None = None,
) -> list[str]:
    """Give a user a role; granting one they hold changes (and audits) nothing."""
    if role not in ROLES:
        raise InvalidInput(
            "unknown_role",
            f"Role must be one of {sorted(ROLES)}.",
            {"role": [f"Must be one of {sorted(ROLES)}."]},
        )
    with uow.commit_on_exit() as session:
        get_user(session, user_id)
        if session.get(UserRole, (user_id, role)) is None:
            session.add(UserRole(user_id=user_id, role=role))
            audit.record(
                session,
                audit.ROLE_GRANTED,
                subject=user_id,
                actor=audit.Actor(caller, granted_by),
                at=now,
                details={"role": role},
            )
        session.flush()
        return roles(session, user_id)

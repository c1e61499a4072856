"""AuthService: identities, sessions, tokens and MFA over RPC."""

from services.auth import mfa, schemas, sessions, users
from services.auth.keys import SigningKeys
from shared.database import Database
from shared.outbox import OutboxRelay
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class AuthService(ServiceBase):
    name = "auth"

    db = Database()
    keys = SigningKeys()
    outbox = OutboxRelay()
    settings = sessions.AuthSettings()

    @rpc
    def register(self, email, password, full_name):
        args = load(
            schemas.RegisterArgs, {"email": email, "password": password, "full_name": full_name}
        )
        return users.register(self.db, now=utcnow(), **args)

    @rpc
    def login(self, email, password):
        args = load(schemas.LoginArgs, {"email": email, "password": password})
        return sessions.login(self.db, self.keys, self.settings, now=utcnow(), **args)

    @rpc
    def verify_mfa(self, mfa_token, code):
        args = load(schemas.MfaVerifyArgs, {"mfa_token": mfa_token, "code": code})
        return mfa.verify_mfa(self.db, self.keys, self.settings, now=utcnow(), **args)

    @rpc
    def enroll_mfa(self, user_id):
        return mfa.enroll_mfa(self.db, user_id)

    @rpc
    def confirm_mfa(self, user_id, code):
        args = load(schemas.MfaConfirmArgs, {"code": code})
        mfa.confirm_mfa(self.db, user_id, now=utcnow(), **args)

    @rpc
    def refresh(self, refresh_token):
        args = load(schemas.RefreshArgs, {"refresh_token": refresh_token})
        return sessions.refresh(self.db, self.keys, self.settings, now=utcnow(), **args)

    @rpc
    def logout(self, user_id, session_id):
        sessions.logout(self.db, user_id, session_id, now=utcnow())

    @rpc
    def me(self, user_id, session_id):
        return users.me(self.db, user_id, session_id, now=utcnow())

    @rpc
    def jwks(self):
        return self.keys.jwks()

    @rpc
    def revoked_sessions(self):
        return sessions.revoked_sessions(self.db, self.settings, now=utcnow())

    @rpc
    def grant_role(self, user_id, role):
        """Operator command (nameko shell); not exposed over HTTP."""
        return users.grant_role(self.db, user_id, role)

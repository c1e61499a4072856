"""AuthService: identities, sessions, tokens and MFA over RPC."""

from services.auth import mfa, schemas, sessions, users
from services.auth.keys import SigningKeys
from shared import audit
from shared.database import Database
from shared.outbox import OutboxRelay
from shared.rpc import CallerIdentity, rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class AuthService(ServiceBase):
    name = "auth"

    db = Database()
    keys = SigningKeys()
    outbox = OutboxRelay()
    settings = sessions.AuthSettings()
    caller = CallerIdentity()

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
        return sessions.refresh(
            self.db, self.keys, self.settings, now=utcnow(), caller=self.caller, **args
        )

    @rpc
    def logout(self, user_id, session_id):
        sessions.logout(self.db, user_id, session_id, now=utcnow(), caller=self.caller)

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
    def grant_role(self, user_id, role, granted_by=None):
        """Operator command (nameko shell); not exposed over HTTP. `granted_by`:
        the admin the operator acts for, if any (audited beside the caller)."""
        args = load(
            schemas.GrantRoleArgs, {"user_id": user_id, "role": role, "granted_by": granted_by}
        )
        return users.grant_role(self.db, now=utcnow(), caller=self.caller, **args)

    @rpc
    def list_audit(self, after=None, limit=50, action=None):
        """Role grants and session revocations, newest first (for admins)."""
        args = load(audit.ListAuditArgs, {"after": after, "limit": limit, "action": action})
        return audit.list_entries(self.db, args["after"], args["limit"], args["action"])

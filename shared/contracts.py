"""Cross-service contracts: event types and their payloads, in one place.

Producers and consumers both import these names, so renaming an event
breaks a test instead of silently dropping messages in production.
Every event travels in the envelope of shared.events; the payload fields
are listed beside each type.
"""

AUTH = "auth"
ACCOUNTS = "accounts"

# auth.events
USER_REGISTERED = "user_registered"  # {user_id, email, full_name}
LOGIN_SUCCEEDED = "login_succeeded"  # {user_id, session_id, mfa}
LOGIN_FAILED = "login_failed"  # {user_id, failures, locked_until|null}
SESSION_REVOKED = "session_revoked"  # {session_id, user_id, reason, revoked_at}
MFA_ENABLED = "mfa_enabled"  # {user_id}

# accounts.events
ACCOUNT_OPENED = "account_opened"  # {account_id, owner_id, currency, name}

# Access-token claims the gateway relies on.
TOKEN_ISSUER = "fintech-auth"  # noqa: S105 (a name, not a secret)
TOKEN_AUDIENCE = "fintech-api"  # noqa: S105

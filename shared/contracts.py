"""Cross-service contracts: event types and their payloads, in one place.

Producers and consumers both import these names, so renaming an event
breaks a test instead of silently dropping messages in production.
Every event travels in the envelope of shared.events; the payload fields
are listed beside each type.
"""

AUTH = "auth"
ACCOUNTS = "accounts"
TRANSACTIONS = "transactions"
RISK = "risk"
PAYMENTS = "payments"
NOTIFICATIONS = "notifications"
ANALYTICS = "analytics"
# Every nameko service of the platform, by its `name`.
SERVICES = (ACCOUNTS, ANALYTICS, AUTH, NOTIFICATIONS, PAYMENTS, RISK, TRANSACTIONS)

# auth.events
USER_REGISTERED = "user_registered"  # {user_id, email, full_name}
LOGIN_SUCCEEDED = "login_succeeded"  # {user_id, session_id, mfa}
LOGIN_FAILED = "login_failed"  # {user_id, failures, factor: password|totp, locked_until|null}
SESSION_REVOKED = "session_revoked"  # {session_id, user_id, reason, revoked_at}
MFA_ENABLED = "mfa_enabled"  # {user_id}

# accounts.events
ACCOUNT_OPENED = "account_opened"  # {account_id, owner_id, currency, name}
FUNDS_RESERVED = "funds_reserved"  # {transfer_id, hold_id, account_id, amount, currency}
FUNDS_RESERVATION_FAILED = "funds_reservation_failed"  # {transfer_id, reason}
FUNDS_RELEASED = "funds_released"  # {transfer_id, hold_id, account_id, reason}
TRANSFER_POSTED = "transfer_posted"  # {transfer_id, entry_id}  internal: debit + credit
DEPOSIT_CREDITED = "deposit_credited"  # {transfer_id, entry_id}
PAYOUT_CAPTURED = "payout_captured"  # {transfer_id, entry_id}

# transactions.events (the saga's first and last word)
# {transfer_id, kind, owner_id, amount, currency, from_account_id, to_account_id,
#  reference, source (deposit: {type, token}), beneficiary (payout: {name, iban}),
#  deadline}
TRANSFER_REQUESTED = "transfer_requested"
TRANSFER_COMPLETED = "transfer_completed"  # {transfer_id, kind, amount, currency, ...}
TRANSFER_FAILED = "transfer_failed"  # {transfer_id, kind, reason, ...}

# risk.events
TRANSFER_ASSESSED = "transfer_assessed"  # {transfer_id, decision, score 0-100, reasons, transfer}
# A transfer held for an admin's decision (issue 4; consumed by notifications).
TRANSFER_REVIEW_REQUESTED = "transfer_review_requested"  # {transfer_id, owner_id, ..., transfer}

# payments.events
CARD_CHARGED = "card_charged"  # {transfer_id, provider, provider_reference}
CARD_CHARGE_FAILED = "card_charge_failed"  # {transfer_id, reason}
PAYOUT_SUCCEEDED = "payout_succeeded"  # {transfer_id, provider, provider_reference}
PAYOUT_FAILED = "payout_failed"  # {transfer_id, reason}

# Transfer kinds and failure reasons (API: failure_reason).
KIND_DEPOSIT = "deposit"
KIND_INTERNAL = "internal"
KIND_PAYOUT = "payout"
REASON_INSUFFICIENT_FUNDS = "insufficient_funds"
REASON_RISK_REJECTED = "risk_rejected"
REASON_CARD_DECLINED = "card_declined"
REASON_PAYOUT_FAILED = "payout_failed"
REASON_PROVIDER_UNAVAILABLE = "provider_unavailable"
REASON_ACCOUNT_UNAVAILABLE = "account_unavailable"
REASON_TIMED_OUT = "timed_out"

# Risk decisions.
APPROVE = "approve"
REVIEW = "review"
REJECT = "reject"

# Access-token claims the gateway relies on.
TOKEN_ISSUER = "fintech-auth"  # noqa: S105 (a name, not a secret)
TOKEN_AUDIENCE = "fintech-api"  # noqa: S105

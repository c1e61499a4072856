"""How notifications reaches its providers, from the environment.

SMTP (email):
    SMTP_HOST / SMTP_PORT            127.0.0.1 / 8025 (the local sandbox)
    SMTP_USERNAME / SMTP_PASSWORD    unset: no AUTH
    SMTP_STARTTLS                    false; true upgrades the connection first
    SMTP_TIMEOUT                     10 s per connection attempt and command
    NOTIFICATIONS_FROM               "Fintech <no-reply@fintech.local>"

HTTP providers (SMS, push; the sandbox's API):
    NOTIFICATIONS_SMS_URL            http://127.0.0.1:8110/sms
    NOTIFICATIONS_SMS_API_KEY        sms_sandbox_dev outside production; required in production
    NOTIFICATIONS_PUSH_URL           http://127.0.0.1:8110/push
    NOTIFICATIONS_PUSH_API_KEY       push_sandbox_dev outside production; required in production
    NOTIFICATIONS_PROVIDER_CONNECT_TIMEOUT / _READ_TIMEOUT   3.05 / 10 s

Every provider (email, SMS, push each have their own breaker):
    NOTIFICATIONS_PROVIDER_MAX_ATTEMPTS       3 tries per send (tenacity), within 30 s
    NOTIFICATIONS_PROVIDER_BACKOFF_SECONDS    0.25: exponential backoff with full jitter, up to 4 s
    NOTIFICATIONS_BREAKER_FAILURES            5 consecutive failed tries open the circuit
    NOTIFICATIONS_BREAKER_RESET_SECONDS       30 s open before one trial call
"""

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr

from shared import config
from shared.providers import api_key_from_env, env_seconds

DEV_SMS_URL = "http://127.0.0.1:8110/sms"
DEV_PUSH_URL = "http://127.0.0.1:8110/push"
DEV_SMS_API_KEY = "sms_sandbox_dev"  # the sandbox's development keys, not secrets
DEV_PUSH_API_KEY = "push_sandbox_dev"
DEFAULT_FROM = "Fintech <no-reply@fintech.local>"
RETRY_DEADLINE = 30.0  # seconds one send may spend on its tries


@dataclass(frozen=True)
class NotificationSettings:
    smtp_host: str
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    smtp_starttls: bool
    smtp_timeout: float
    sender: str
    sms_url: str
    sms_api_key: str
    push_url: str
    push_api_key: str
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    backoff: float
    breaker_failures: int
    breaker_reset_timeout: float

    @property
    def sender_domain(self) -> str:
        """The domain of the From address (for Message-IDs)."""
        return parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"

    @property
    def lease_seconds(self) -> float:
        """How long one send may take at most: its tries, their timeouts, some slack."""
        per_try = max(self.connect_timeout + self.read_timeout, self.smtp_timeout * 2)
        return RETRY_DEADLINE + per_try + 15.0

    @classmethod
    def from_env(cls) -> "NotificationSettings":
        sender = config.env_str("NOTIFICATIONS_FROM", DEFAULT_FROM)
        _check_sender(sender)
        username = config.env_str("SMTP_USERNAME")
        password = config.env_str("SMTP_PASSWORD")
        if (username is None) != (password is None):
            raise config.ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
        return cls(
            smtp_host=config.env_str("SMTP_HOST", "127.0.0.1"),
            smtp_port=config.env_int("SMTP_PORT", 8025, minimum=1),
            smtp_username=username,
            smtp_password=password,
            smtp_starttls=config.env_bool("SMTP_STARTTLS", False),
            smtp_timeout=env_seconds("SMTP_TIMEOUT", 10.0),
            sender=sender,
            sms_url=config.env_str("NOTIFICATIONS_SMS_URL", DEV_SMS_URL),
            sms_api_key=api_key_from_env("NOTIFICATIONS_SMS_API_KEY", DEV_SMS_API_KEY),
            push_url=config.env_str("NOTIFICATIONS_PUSH_URL", DEV_PUSH_URL),
            push_api_key=api_key_from_env("NOTIFICATIONS_PUSH_API_KEY", DEV_PUSH_API_KEY),
            connect_timeout=env_seconds("NOTIFICATIONS_PROVIDER_CONNECT_TIMEOUT", 3.05),
            read_timeout=env_seconds("NOTIFICATIONS_PROVIDER_READ_TIMEOUT", 10.0),
            max_attempts=config.env_int("NOTIFICATIONS_PROVIDER_MAX_ATTEMPTS", 3, minimum=1),
            backoff=env_seconds("NOTIFICATIONS_PROVIDER_BACKOFF_SECONDS", 0.25),
            breaker_failures=config.env_int("NOTIFICATIONS_BREAKER_FAILURES", 5, minimum=1),
            breaker_reset_timeout=env_seconds("NOTIFICATIONS_BREAKER_RESET_SECONDS", 30.0),
        )


def _check_sender(sender: str) -> None:
    _, address = parseaddr(sender)
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        address = ""
    if "@" not in address:
        raise config.ConfigError(f"NOTIFICATIONS_FROM must be an email address, got {sender!r}")

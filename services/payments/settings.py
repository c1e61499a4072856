"""How payments reaches its provider, from the environment (docs/RUNTIME-CONTRACT.md)."""

from dataclasses import dataclass

from shared import config
from shared.providers import api_key_from_env, env_seconds

DEV_PROVIDER_URL = "http://127.0.0.1:8100"
DEV_API_KEY = "sk_sandbox_dev"  # the sandbox's development key, not a secret


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: str
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    breaker_failures: int
    breaker_reset_timeout: float

    @classmethod
    def from_env(cls) -> "ProviderSettings":
        return cls(
            name=config.env_str("PAYMENTS_PROVIDER_NAME", "sandbox"),
            base_url=config.env_str("PAYMENTS_PROVIDER_URL", DEV_PROVIDER_URL),
            api_key=api_key_from_env("PAYMENTS_PROVIDER_API_KEY", DEV_API_KEY),
            connect_timeout=env_seconds("PAYMENTS_PROVIDER_CONNECT_TIMEOUT", 3.05),
            read_timeout=env_seconds("PAYMENTS_PROVIDER_READ_TIMEOUT", 10.0),
            max_attempts=config.env_int("PAYMENTS_PROVIDER_MAX_ATTEMPTS", 3, minimum=1),
            breaker_failures=config.env_int("PAYMENTS_PROVIDER_BREAKER_FAILURES", 5, minimum=1),
            breaker_reset_timeout=env_seconds("PAYMENTS_PROVIDER_BREAKER_RESET_SECONDS", 30.0),
        )

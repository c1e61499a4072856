"""How payments finds its provider: environment defaults and refusals."""

import pytest

from services.payments.settings import DEV_API_KEY, DEV_PROVIDER_URL, ProviderSettings
from shared.config import ConfigError

_VARIABLES = (
    "ENVIRONMENT",
    "PAYMENTS_PROVIDER_NAME",
    "PAYMENTS_PROVIDER_URL",
    "PAYMENTS_PROVIDER_API_KEY",
    "PAYMENTS_PROVIDER_CONNECT_TIMEOUT",
    "PAYMENTS_PROVIDER_READ_TIMEOUT",
    "PAYMENTS_PROVIDER_MAX_ATTEMPTS",
    "PAYMENTS_PROVIDER_BREAKER_FAILURES",
    "PAYMENTS_PROVIDER_BREAKER_RESET_SECONDS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_development_talks_to_the_local_sandbox_by_default():
    settings = ProviderSettings.from_env()
    assert (settings.name, settings.base_url, settings.api_key) == (
        "sandbox",
        DEV_PROVIDER_URL,
        DEV_API_KEY,
    )
    assert settings.connect_timeout > 0 and settings.read_timeout > 0
    assert settings.max_attempts >= 1 and settings.breaker_failures >= 1


def test_production_refuses_to_start_without_an_api_key(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="PAYMENTS_PROVIDER_API_KEY"):
        ProviderSettings.from_env()
    monkeypatch.setenv("PAYMENTS_PROVIDER_API_KEY", "sk_live_x")
    assert ProviderSettings.from_env().api_key == "sk_live_x"


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_timeouts_must_be_positive_numbers(monkeypatch, value):
    monkeypatch.setenv("PAYMENTS_PROVIDER_READ_TIMEOUT", value)
    with pytest.raises(ConfigError, match="PAYMENTS_PROVIDER_READ_TIMEOUT"):
        ProviderSettings.from_env()


def test_fractional_seconds_are_accepted(monkeypatch):
    monkeypatch.setenv("PAYMENTS_PROVIDER_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("PAYMENTS_PROVIDER_BREAKER_RESET_SECONDS", "2.5")
    settings = ProviderSettings.from_env()
    assert (settings.connect_timeout, settings.breaker_reset_timeout) == (0.5, 2.5)

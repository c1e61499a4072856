import pytest

from shared import config


def test_each_service_gets_its_own_sqlite_file_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("AUTH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert config.database_url("auth") == f"sqlite:///{tmp_path}/db/auth.sqlite3"


def test_service_specific_url_wins_over_the_shared_template(monkeypatch):
    monkeypatch.delenv("AUTH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/fintech_{service}")
    monkeypatch.setenv("ACCOUNTS_DATABASE_URL", "postgresql://other/accounts")
    assert config.database_url("auth") == "postgresql://db/fintech_auth"
    assert config.database_url("accounts") == "postgresql://other/accounts"


def test_a_shared_url_without_placeholder_is_refused(monkeypatch):
    monkeypatch.delenv("AUTH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/fintech")
    with pytest.raises(config.ConfigError, match=r"\{service\}"):
        config.database_url("auth")


def test_bad_integers_name_the_variable(monkeypatch):
    monkeypatch.setenv("GATEWAY_RPC_TIMEOUT", "soon")
    with pytest.raises(config.ConfigError, match="GATEWAY_RPC_TIMEOUT"):
        config.env_int("GATEWAY_RPC_TIMEOUT", 10)

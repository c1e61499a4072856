"""Configuration from the environment, read once and validated.

Every knob is an environment variable (docs/RUNTIME-CONTRACT.md); a bad
value stops the process at start with a message naming the variable.
"""

import os
from datetime import timedelta
from pathlib import Path

DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"


class ConfigError(RuntimeError):
    pass


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be on or off (true/false, yes/no, 1/0), got {raw!r}")


def env_list(name: str) -> list[str]:
    raw = env_str(name, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def environment() -> str:
    return env_str("ENVIRONMENT", "development")


def is_production() -> bool:
    return environment() == "production"


def amqp_uri() -> str:
    return env_str("AMQP_URI", DEFAULT_AMQP_URI)


def inbox_retention() -> timedelta:
    """How long consumers keep the ids of events they handled (shared.housekeeping);
    the dead-letter CLI will not replay an event older than that unforced."""
    return timedelta(days=env_int("INBOX_RETENTION_DAYS", 30, 1))


def data_dir() -> Path:
    return Path(env_str("DATA_DIR", "var")).resolve()


def database_url(service: str) -> str:
    """The database of one service.

    <SERVICE>_DATABASE_URL wins; else DATABASE_URL with `{service}`
    replaced; else an embedded SQLite file under DATA_DIR, so the platform
    starts with nothing but RabbitMQ.
    """
    own = env_str(f"{service.upper()}_DATABASE_URL")
    if own:
        return own
    shared_url = env_str("DATABASE_URL")
    if shared_url:
        if "{service}" not in shared_url:
            raise ConfigError(
                "DATABASE_URL must contain {service} so that each service gets its "
                "own database (e.g. postgresql://fintech@db/fintech_{service}); "
                f"or set {service.upper()}_DATABASE_URL"
            )
        return shared_url.replace("{service}", service)
    path = data_dir() / "db" / f"{service}.sqlite3"
    return f"sqlite:///{path}"

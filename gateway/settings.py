"""Gateway settings: environment defaults, overridable through create_app(config)."""

import re
from pathlib import Path

from shared import config

# What the image's entrypoint accepts in a secret file (ops/docker/entrypoint.sh).
SECRET_FILE_MAX_BYTES = 64 * 1024


def env_secret(name: str) -> str | None:
    """NAME, or the content of the file that NAME_FILE names (a Docker or
    Kubernetes secret), read as the image's entrypoint reads the platform's
    <NAME>_FILE variables (ops/docker/entrypoint.sh): trailing newlines
    dropped; an empty NAME_FILE ignored; both set, an unreadable, empty or
    over-64-KiB file is an error. The entrypoint leaves NAME_FILE to us when
    NAME is not one of its prefixes, and then the secret never sits in the
    environment."""
    value = config.env_str(name)
    path = config.env_str(f"{name}_FILE")
    if path is None:
        return value
    if value is not None:
        raise config.ConfigError(f"both {name} and {name}_FILE are set; set only one")
    try:
        content = Path(path).read_bytes()
    except OSError:
        raise config.ConfigError(f"{name}_FILE: cannot read secret file {path}") from None
    if len(content) > SECRET_FILE_MAX_BYTES:
        raise config.ConfigError(f"{name}_FILE: secret file {path} is larger than 64 KiB")
    try:
        secret = content.decode().rstrip("\n")
    except UnicodeDecodeError:
        raise config.ConfigError(f"{name}_FILE: secret file {path} is not UTF-8") from None
    if not secret:
        raise config.ConfigError(f"{name}_FILE: secret file {path} is empty")
    return secret


def metrics_token() -> str | None:
    """The bearer token Prometheus must send for /metrics (None: open, which
    gateway/blueprints/health.py allows outside production only)."""
    token = env_secret("METRICS_TOKEN")
    # It travels in an Authorization header: printable ASCII, no spaces.
    if token is not None and not re.fullmatch(r"[!-~]+", token):
        raise config.ConfigError(
            "METRICS_TOKEN must be printable ASCII without spaces, e.g. `openssl rand -hex 32`"
        )
    return token


def from_env() -> dict:
    return {
        "AMQP_URI": config.amqp_uri(),
        "RPC_TIMEOUT": config.env_int("GATEWAY_RPC_TIMEOUT", 10, minimum=1),
        "RPC_POOL_SIZE": config.env_int("GATEWAY_THREADS", 16, minimum=1) + 2,
        # Requests of one process that may wait for a transfer's end at once
        # (Prefer: wait): each holds a thread, so leave some for the rest.
        "MAX_WAITERS": config.env_int(
            "GATEWAY_MAX_WAITERS", max(config.env_int("GATEWAY_THREADS", 16, minimum=1) - 2, 1), 0
        ),
        "HEALTH_TIMEOUT": config.env_int("GATEWAY_HEALTH_TIMEOUT", 2, minimum=1),
        # Services whose health /health/ready reports. They do not decide
        # readiness: a service down makes only its own endpoints answer 503.
        "HEALTH_SERVICES": config.env_list("GATEWAY_HEALTH_SERVICES")
        or ["auth", "accounts", "transactions", "payments", "risk"],
        # A service failing this many calls in a row (timeouts, not running,
        # its database unreachable) is not called for CIRCUIT_RESET seconds.
        "CIRCUIT_FAILURES": config.env_int("GATEWAY_CIRCUIT_FAILURES", 5, minimum=1),
        "CIRCUIT_RESET": config.env_int("GATEWAY_CIRCUIT_RESET_SECONDS", 10, minimum=1),
        # Longest access-token lifetime: how long a revoked session is remembered.
        "ACCESS_TOKEN_MAX_TTL": config.env_int("AUTH_ACCESS_TOKEN_MAX_TTL", 900, minimum=60),
        "MAX_CONTENT_LENGTH": config.env_int("GATEWAY_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
        # Redis (redis://...) in production; in-process counters otherwise.
        "RATELIMIT_STORAGE_URI": config.env_str("RATE_LIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_DEFAULT": config.env_str("RATE_LIMIT_DEFAULT", "1200 per minute"),
        "RATELIMIT_AUTH": config.env_str("RATE_LIMIT_AUTH", "20 per minute"),
        "RATELIMIT_HEADERS_ENABLED": True,
        # Hops of trusted reverse proxies in front (X-Forwarded-For); 0 locally.
        "TRUSTED_PROXIES": config.env_int("GATEWAY_TRUSTED_PROXIES", 0),
        # Bearer token of /metrics (METRICS_TOKEN or METRICS_TOKEN_FILE);
        # required in production.
        "METRICS_TOKEN": metrics_token(),
        "API_TITLE": "fintech-services",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        # Swagger UI over that document (gateway/app.py).
        "API_EXPLORER_PATH": "/docs",
        "JSON_SORT_KEYS": False,
    }

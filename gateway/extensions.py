"""The gateway's long-lived helpers, one set per process, made in create_app."""

import functools

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from gateway.instances import InstanceRegistry
from gateway.outcomes import TransferOutcomes
from gateway.revocations import RevocationList, RevocationListener
from gateway.rpc import RpcPool, ServiceCircuits
from gateway.tokens import Principal, TokenVerifier
from shared import broker, contracts
from shared.errors import Forbidden, Unauthenticated, Unavailable

# How long a request waits for the revocation feed before refusing (503).
REVOCATIONS_WAIT = 3.0


def _rate_limit_key() -> str:
    return get_remote_address()


limiter = Limiter(
    key_func=_rate_limit_key, default_limits=[lambda: current_app.config["RATELIMIT_DEFAULT"]]
)


def auth_rate_limit():
    """Stricter limit for endpoints that take credentials (per client address)."""
    return limiter.limit(lambda: current_app.config["RATELIMIT_AUTH"], key_func=_rate_limit_key)


class Platform:
    """What views use to reach the services."""

    def __init__(self, settings: dict):
        # The process's way into the broker, as the gateway (read once: the
        # environment and the certificate's name), for everything below and
        # the health and operations views.
        self.broker = broker.access(broker.GATEWAY, settings["AMQP_URI"])
        self.rpc = RpcPool(
            self.broker,
            timeout=settings["RPC_TIMEOUT"],
            size=settings["RPC_POOL_SIZE"],
            circuits=ServiceCircuits(settings["CIRCUIT_FAILURES"], settings["CIRCUIT_RESET"]),
        )
        # One client per service: /v1/admin/services asks them all at once.
        # No circuits: health checks must see each service as it is.
        self.health_rpc = RpcPool(
            self.broker, timeout=settings["HEALTH_TIMEOUT"], size=len(contracts.SERVICES)
        )
        self.revoked = RevocationList(keep_for=settings["ACCESS_TOKEN_MAX_TTL"])
        self.revocation_listener = RevocationListener(
            self.broker, self.revoked, self._current_revocations
        )
        self.verifier = TokenVerifier(self._jwks, self._is_revoked)
        self.outcomes = TransferOutcomes(self.broker, settings["MAX_WAITERS"])
        # Every service instance's heartbeat, for /v1/admin/services.
        self.instances = InstanceRegistry(self.broker)

    def _is_revoked(self, session_id: str) -> bool:
        # Fail closed: without the revocation feed a logged-out token would
        # still be accepted. A fresh worker waits briefly for its first sync.
        if not self.revocation_listener.connected.wait(REVOCATIONS_WAIT):
            raise Unavailable(
                "revocations_unavailable", "Cannot verify sessions right now; retry shortly."
            )
        return session_id in self.revoked

    def _jwks(self) -> dict:
        with self.rpc.client() as rpc:
            return rpc.auth.jwks()

    def _current_revocations(self) -> list[dict]:
        with self.rpc.client() as rpc:
            return rpc.auth.revoked_sessions()


def platform() -> Platform:
    return current_app.extensions["fintech"]


def principal() -> Principal:
    """The caller, verified from the bearer token (401 when absent or bad)."""
    if "principal" in g:
        return g.principal
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing_token", "Send Authorization: Bearer <access_token>.")
    plat = platform()
    plat.revocation_listener.ensure_started()
    plat.outcomes.ensure_started()
    plat.instances.ensure_started()
    g.principal = plat.verifier.verify(token.strip())
    return g.principal


def require_role(role: str) -> Principal:
    caller = principal()
    if role not in caller.roles:
        raise Forbidden("forbidden", f"This needs the {role} role.")
    return caller


def authenticated(view):
    """Verify the caller before anything else (a bad token is 401, not 422)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        principal()
        return view(*args, **kwargs)

    return wrapper

"""The gateway on its own, for unit tests: the real Flask app against a
broker that is not there, optionally with the services it calls replaced by
plain objects (`FakeServices`) and callers named by test headers instead of
a token."""

from contextlib import contextmanager

from flask import g, request

from gateway.app import create_app
from gateway.tokens import Principal

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens: RPC fails at once


class FakeServices:
    """In place of the gateway's RPC pool: `rpc.<service>` is the object given."""

    def __init__(self, **services):
        self.__dict__.update(services)

    @contextmanager
    def client(self):
        yield self


def _principal_from_test_headers():
    """The caller named by X-Test-User (roles comma-separated in X-Test-Roles)."""
    user = request.headers.get("X-Test-User")
    if user:
        roles = tuple(filter(None, request.headers.get("X-Test-Roles", "").split(",")))
        g.principal = Principal(user_id=user, session_id="s", roles=roles)


def gateway_app(*, rpc: FakeServices | None = None, test_principal: bool = False, **settings):
    """The gateway's app with `settings` over a dead broker, short timeouts
    and per-process rate limits."""
    app = create_app(
        {
            "AMQP_URI": DEAD_BROKER,
            "RPC_TIMEOUT": 1,
            "RATELIMIT_STORAGE_URI": "memory://",
            **settings,
        }
    )
    if rpc is not None:
        app.extensions["fintech"].rpc = rpc
    if test_principal:
        app.before_request(_principal_from_test_headers)
    return app

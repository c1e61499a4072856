"""/v1/webhooks/payments/<provider>: signed callbacks from payment providers.

No bearer token: the caller is the provider, and the HMAC signature over the
raw body (shared.webhooks) is its proof. The secret comes from
PAYMENTS_WEBHOOK_SECRET_<PROVIDER> (comma-separated while rotating: any
one verifies); a provider without one is unknown (404). A verified event is
handed to payments, which keeps it once per event id, so a provider that
delivers twice is answered 200 twice and recorded once.
"""

import os
import re
import time

from flask import current_app, request
from marshmallow import Schema, fields

from gateway import bodies
from gateway.bodies import Blueprint
from gateway.extensions import platform
from shared import webhooks
from shared.errors import BadRequest, NotFound, Unauthenticated

blp = Blueprint("webhooks", __name__, description="Payment provider callbacks")

_PROVIDER = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SIGNATURE_PARAMETER = {
    "in": "header",
    "name": webhooks.SIGNATURE_HEADER,
    "required": True,
    "schema": {"type": "string"},
    "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">',
}


class WebhookReceived(Schema):
    received = fields.Boolean(required=True)


def _secrets(provider: str) -> list[str]:
    if not _PROVIDER.match(provider):
        return []
    name = f"PAYMENTS_WEBHOOK_SECRET_{provider.upper()}"
    raw = current_app.config.get(name) or os.environ.get(name) or ""
    return [secret.strip() for secret in raw.split(",") if secret.strip()]


def _verify(secrets: list[str], header: str | None, body: bytes) -> None:
    now = time.time()
    for secret in secrets:
        try:
            webhooks.verify(secret, header, body, now)
            return
        except Unauthenticated:
            continue
    raise Unauthenticated("invalid_signature", "The webhook signature is missing or invalid.")


@blp.route("/v1/webhooks/payments/<provider>", methods=["POST"])
@blp.response(200, WebhookReceived)
@blp.doc(parameters=[_SIGNATURE_PARAMETER])
def payment_provider_event(provider):
    secrets = _secrets(provider)
    if not secrets:
        raise NotFound("unknown_provider", f"No payment provider {provider!r}.")
    # The exact bytes received: the signature covers them, not a re-encoding.
    body = request.get_data(cache=False)
    _verify(secrets, request.headers.get(webhooks.SIGNATURE_HEADER), body)
    try:
        event = bodies.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise BadRequest("malformed_json", "The event is not a JSON object.")
    with platform().rpc.client() as rpc:
        rpc.payments.record_provider_event(provider, event)
    return {"received": True}

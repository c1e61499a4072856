"""/v1/notifications: a customer's notifications and their channel preferences."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from gateway.bodies import Blueprint
from gateway.extensions import authenticated, platform, principal
from gateway.schemas import Pattern, StrictBoolean, not_blank

blp = Blueprint("notifications", __name__, description="Notifications and preferences")

BEARER = [{"bearerAuth": []}]

# The same rules as services/notifications/domain.py (the service checks again).
E164 = r"^\+[1-9][0-9]{1,14}$"
MAX_PUSH_TOKEN = 4096


class NotificationsQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class Notification(Schema):
    notification_id = fields.UUID()
    channel = fields.String(metadata={"enum": ["email", "sms", "push"]})
    template = fields.String(
        metadata={
            "description": "welcome, deposit_received, transfer_sent, transfer_received, "
            "transfer_failed, payout_sent, risk_review, new_login, mfa_enabled"
        }
    )
    status = fields.String(metadata={"enum": ["pending", "sending", "sent", "failed"]})
    created_at = fields.String(metadata={"format": "date-time"})


class NotificationListResponse(Schema):
    items = fields.List(fields.Nested(Notification))


class PreferencesResponse(Schema):
    email = fields.Boolean()
    sms = fields.Boolean()
    push = fields.Boolean()
    phone = fields.String(metadata={"description": "E.164; absent when not set."})
    push_token = fields.String(metadata={"description": "Absent when not set."})


class PreferencesUpdate(Schema):
    """Fields left out stay as they are; `null` removes the phone or push token.

    SMS needs a phone and push a push token (422 otherwise: here when the
    body itself turns one on and removes the other, from the service when
    none is kept). Giving a phone (a token) for the first time without
    saying `sms` (`push`) turns it on. A change names at least one field.
    """

    # Shown in /openapi.json (gateway.app): an empty change is refused.
    OPENAPI = {"minProperties": 1}

    email = StrictBoolean()
    sms = StrictBoolean()
    push = StrictBoolean()
    phone = fields.String(
        allow_none=True,
        validate=Pattern(E164, error="Must be an E.164 number such as +4915112345678."),
        metadata={"example": "+4915112345678"},
    )
    push_token = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=MAX_PUSH_TOKEN), not_blank()],
    )

    @validates_schema
    def _a_change_that_can_hold(self, data, **kwargs):
        if not data:
            # No body (or {}) would answer 200 and change nothing.
            raise ValidationError(
                "Give at least one of email, sms, push, phone, push_token.", "body"
            )
        # The service's words (services/notifications/domain.py).
        for channel, address, message in (
            ("sms", "phone", "SMS needs a phone number (phone)."),
            ("push", "push_token", "Push needs a push_token."),
        ):
            if data.get(channel) is True and address in data and data[address] is None:
                raise ValidationError(message, channel)


def _preferences(view: dict) -> dict:
    return {key: value for key, value in view.items() if value is not None}


@blp.route("/v1/notifications", methods=["GET"])
@authenticated
@blp.arguments(NotificationsQuery(), location="query")
@blp.response(200, NotificationListResponse)
@blp.doc(security=BEARER)
def list_notifications(query):
    caller = principal()
    with platform().rpc.client() as rpc:
        return {"items": rpc.notifications.list_notifications(caller.user_id, query["limit"])}


@blp.route("/v1/notifications/preferences", methods=["GET"])
@authenticated
@blp.response(200, PreferencesResponse)
@blp.doc(security=BEARER)
def get_preferences():
    caller = principal()
    with platform().rpc.client() as rpc:
        return _preferences(rpc.notifications.get_preferences(caller.user_id))


@blp.route("/v1/notifications/preferences", methods=["PUT"])
@authenticated
@blp.arguments(PreferencesUpdate())
@blp.response(200, PreferencesResponse)
@blp.doc(security=BEARER)
def set_preferences(body):
    caller = principal()
    with platform().rpc.client() as rpc:
        return _preferences(rpc.notifications.set_preferences(caller.user_id, body))

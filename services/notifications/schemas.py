"""notifications' RPC argument schemas."""

from marshmallow import RAISE, Schema, fields, validate

from services.notifications import domain


class StrictBoolean(fields.Boolean):
    """JSON true or false only (not "yes", 1, "on"...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class UserRef(Schema):
    user_id = fields.UUID(required=True)


class ListNotificationsArgs(UserRef):
    limit = fields.Integer(load_default=50, strict=True, validate=validate.Range(min=1, max=200))


class NotificationRef(Schema):
    notification_id = fields.UUID(required=True)


class PreferenceChanges(Schema):
    """Keys absent stay as they are; phone or push_token null clears it."""

    class Meta:
        unknown = RAISE

    email = StrictBoolean()
    sms = StrictBoolean()
    push = StrictBoolean()
    phone = fields.String(
        allow_none=True,
        validate=validate.Regexp(
            domain.E164.pattern, error="Must be an E.164 number such as +4915112345678."
        ),
    )
    push_token = fields.String(
        allow_none=True, validate=validate.Length(min=1, max=domain.MAX_PUSH_TOKEN)
    )


class SetPreferencesArgs(UserRef):
    prefs = fields.Nested(PreferenceChanges, required=True)

"""NotificationsService: tells customers what happened, by email, SMS and push.

Listens to auth (user_registered: welcome, and the directory of email
addresses; login_succeeded: new sign-in; mfa_enabled), transactions
(transfer_completed: deposit received, transfer sent and received, payout
sent; transfer_failed) and risk (transfer_review_requested: under review).
Each event becomes one notification per customer and channel (see
sending); delivery failures are retried through the step's retry queues
and, after the last attempt, the event is parked in
`saga.notifications.dead-letters` (replay with `python -m shared.dlq replay
notifications ...` sends what is still unsent).
"""

from datetime import timedelta

from nameko.extensions import DependencyProvider

from services.notifications import consumers, preferences, schemas, views
from services.notifications.providers import Channels
from services.notifications.settings import NotificationSettings
from services.notifications.steps import notification_step
from shared import contracts
from shared.database import Database
from shared.errors import NotFound
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class Providers(DependencyProvider):
    """One client per channel and process, so each circuit breaker sees every send."""

    def setup(self):
        self.settings = NotificationSettings.from_env()
        self.channels = Channels.from_settings(
            self.settings, pool_size=int(self.container.config.get("max_workers", 10))
        )
        self.lease = timedelta(seconds=self.settings.lease_seconds)

    def stop(self):
        self.channels.close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self


class NotificationsService(ServiceBase):
    name = "notifications"

    db = Database()
    providers = Providers()

    def _handle(self, consume, envelope, delivery):
        consume(
            self.db,
            self.providers.channels,
            envelope,
            delivery=delivery,
            now=utcnow(),
            lease=self.providers.lease,
        )

    # -- events ----------------------------------------------------------------

    @notification_step(contracts.AUTH, contracts.USER_REGISTERED)
    def on_user_registered(self, envelope, delivery=None):
        self._handle(consumers.handle_user_registered, envelope, delivery)

    @notification_step(contracts.AUTH, contracts.LOGIN_SUCCEEDED)
    def on_login_succeeded(self, envelope, delivery=None):
        self._handle(consumers.handle_login_succeeded, envelope, delivery)

    @notification_step(contracts.AUTH, contracts.MFA_ENABLED)
    def on_mfa_enabled(self, envelope, delivery=None):
        self._handle(consumers.handle_mfa_enabled, envelope, delivery)

    @notification_step(contracts.TRANSACTIONS, contracts.TRANSFER_COMPLETED)
    def on_transfer_completed(self, envelope, delivery=None):
        self._handle(consumers.handle_transfer_completed, envelope, delivery)

    @notification_step(contracts.TRANSACTIONS, contracts.TRANSFER_FAILED)
    def on_transfer_failed(self, envelope, delivery=None):
        self._handle(consumers.handle_transfer_failed, envelope, delivery)

    @notification_step(contracts.RISK, contracts.TRANSFER_REVIEW_REQUESTED)
    def on_transfer_review_requested(self, envelope, delivery=None):
        self._handle(consumers.handle_transfer_review_requested, envelope, delivery)

    # -- RPC ---------------------------------------------------------------------

    @rpc
    def list_notifications(self, user_id, limit=50):
        args = load(schemas.ListNotificationsArgs, {"user_id": user_id, "limit": limit})
        return views.list_notifications(self.db, str(args["user_id"]), args["limit"])

    @rpc
    def get_notification(self, notification_id):
        args = load(schemas.NotificationRef, {"notification_id": notification_id})
        found = views.get_notification(self.db, str(args["notification_id"]))
        if found is None:
            raise NotFound("notification_not_found", "No such notification.")
        return found

    @rpc
    def get_preferences(self, user_id):
        args = load(schemas.UserRef, {"user_id": user_id})
        return preferences.get_preferences(self.db, str(args["user_id"]))

    @rpc
    def set_preferences(self, user_id, prefs):
        args = load(schemas.SetPreferencesArgs, {"user_id": user_id, "prefs": prefs})
        return preferences.set_preferences(self.db, str(args["user_id"]), args["prefs"], utcnow())

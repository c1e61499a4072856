"""PaymentsService: card charges and payouts through the payment provider."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.payments import consumers, handlers, reconciliation, schemas
from services.payments.provider import HttpProvider, ProviderRejected, ProviderUnavailable
from services.payments.settings import ProviderSettings
from shared import contracts
from shared.database import Database
from shared.errors import BadRequest, Unavailable
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class Provider(DependencyProvider):
    """The provider's HTTP client: one per process, so its circuit breaker sees every call."""

    def setup(self):
        settings = ProviderSettings.from_env()
        self.client = HttpProvider(
            settings.base_url,
            settings.api_key,
            (settings.connect_timeout, settings.read_timeout),
            name=settings.name,
            max_attempts=settings.max_attempts,
            breaker_failures=settings.breaker_failures,
            breaker_reset_timeout=settings.breaker_reset_timeout,
            pool_size=int(self.container.config.get("max_workers", 10)),
        )

    def stop(self):
        self.client.close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.client


@contextmanager
def _provider_errors() -> Iterator[None]:
    """Provider errors as the platform's categories, so they cross RPC typed."""
    try:
        yield
    except ProviderUnavailable as exc:
        raise Unavailable("provider_unavailable", str(exc)) from exc
    except ProviderRejected as exc:
        raise BadRequest("provider_rejected", str(exc)) from exc


# An operation in flight this long without an answer is re-sent (same key).
REDRIVE_AFTER_SECONDS = 300


class PaymentsService(ServiceBase):
    name = "payments"

    db = Database()
    outbox = OutboxRelay()
    provider = Provider()

    # -- the transfer saga ---------------------------------------------------
    # A provider outage is retried for minutes (10 attempts, backoff up to
    # 5 minutes, about 8.5 minutes in all) before the step is parked.

    @saga_step(
        contracts.TRANSACTIONS,
        contracts.TRANSFER_REQUESTED,
        kinds=(contracts.KIND_DEPOSIT,),
        attempts=10,
        max_backoff=300,
    )
    def handle_transfer_requested(self, envelope):
        consumers.handle_transfer_requested(self.db, self.provider, envelope)

    @saga_step(
        contracts.ACCOUNTS,
        contracts.FUNDS_RESERVED,
        kinds=(contracts.KIND_PAYOUT,),
        attempts=10,
        max_backoff=300,
    )
    def handle_funds_reserved(self, envelope):
        consumers.handle_funds_reserved(self.db, self.provider, envelope)

    @timer(interval=60)
    def redrive_in_flight_operations(self):
        """Operations a provider never answered (an outage parked their step)."""
        consumers.redrive_in_flight(
            self.db,
            self.provider,
            older_than=timedelta(seconds=REDRIVE_AFTER_SECONDS),
            now=utcnow(),
        )

    @rpc
    def charge_for_deposit(self, transfer_id, amount, currency, token):
        args = load(
            schemas.ChargeArgs,
            {"transfer_id": transfer_id, "amount": amount, "currency": currency, "token": token},
        )
        with _provider_errors():
            return handlers.charge_for_deposit(
                self.db,
                self.provider,
                str(args["transfer_id"]),
                args["amount"],
                args["currency"],
                args["token"],
            )

    @rpc
    def payout(self, transfer_id, amount, currency, beneficiary):
        args = load(
            schemas.PayoutArgs,
            {
                "transfer_id": transfer_id,
                "amount": amount,
                "currency": currency,
                "beneficiary": beneficiary,
            },
        )
        with _provider_errors():
            return handlers.payout(
                self.db,
                self.provider,
                str(args["transfer_id"]),
                args["amount"],
                args["currency"],
                args["beneficiary"],
            )

    @rpc
    def get_operation(self, kind, transfer_id):
        args = load(schemas.OperationRef, {"kind": kind, "transfer_id": transfer_id})
        return handlers.get_operation(self.db, args["kind"], str(args["transfer_id"]))

    # -- what the reconciler (accounts) asks ------------------------------------

    @rpc
    def operations_for_transfers(self, transfer_ids):
        args = load(schemas.TransferIds, {"transfer_ids": transfer_ids})
        return reconciliation.operations_for_transfers(
            self.db, [str(i) for i in args["transfer_ids"]]
        )

    @rpc
    def operations_between(self, after, upto=None):
        args = load(schemas.IdRange, {"after": after, "upto": upto})
        return reconciliation.operations_between(self.db, args["after"], args["upto"])

    @rpc
    def reconcile_provider(self, since, until):
        args = load(schemas.WindowArgs, {"since": since, "until": until})
        with _provider_errors():
            return reconciliation.reconcile_provider(
                self.db, self.provider, args["since"], args["until"]
            )

    @rpc
    def provider_totals(self, day, currency):
        args = load(schemas.DayTotalsArgs, {"day": day, "currency": currency})
        with _provider_errors():
            return reconciliation.provider_totals(
                self.db, self.provider, args["day"], args["currency"]
            )

    @rpc
    def record_provider_event(self, provider, event):
        args = load(schemas.RecordProviderEventArgs, {"provider": provider, "event": event})
        return handlers.record_provider_event(self.db, args["provider"], args["event"])

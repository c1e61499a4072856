"""AccountsService: accounts, balances and the ledger over RPC; and the reconciler."""

import logging
from datetime import timedelta

import eventlet
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.accounts import consumers, handlers, reconciliation, schemas
from services.accounts.metrics import ReconciliationMetrics
from shared import config, contracts
from shared.database import Database
from shared.errors import Conflict, Unavailable
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import RpcProxy, rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow

log = logging.getLogger(__name__)

# A run may be scheduled this often; a full pass at most this often.
RECONCILIATION_INTERVAL = config.env_int("RECONCILIATION_INTERVAL_SECONDS", 300, 0)
RECONCILIATION_FULL_EVERY = timedelta(
    seconds=config.env_int("RECONCILIATION_FULL_EVERY_SECONDS", 86400, 60)
)


class _Peers:
    """The reconciler's questions to transactions and payments, each bounded in time
    (nameko 2's RpcProxy would wait forever for a service that is down)."""

    def __init__(self, transactions, payments, timeout: int):
        self._transactions, self._payments, self._timeout = transactions, payments, timeout

    def _ask(self, proxy, method: str, *args):
        try:
            with eventlet.Timeout(self._timeout):
                return getattr(proxy, method)(*args)
        except eventlet.Timeout:
            raise Unavailable(
                "peer_timeout", f"{method} got no answer within {self._timeout} s"
            ) from None

    def ended_transfers(self, after, limit, settled_seconds):
        return self._ask(self._transactions, "ended_transfers", after, limit, settled_seconds)

    def ended_transfers_by_id(self, after, limit):
        return self._ask(self._transactions, "ended_transfers_by_id", after, limit)

    def transfer_states(self, transfer_ids):
        return self._ask(self._transactions, "transfer_states", transfer_ids)

    def operations_between(self, after, upto):
        return self._ask(self._payments, "operations_between", after, upto)

    def stuck_transfers(self, grace_seconds, limit):
        return self._ask(self._transactions, "stuck_transfers", grace_seconds, limit)

    def operations_for_transfers(self, transfer_ids):
        return self._ask(self._payments, "operations_for_transfers", transfer_ids)

    def reconcile_provider(self, since, until):
        return self._ask(self._payments, "reconcile_provider", since, until)

    def provider_totals(self, day, currency):
        return self._ask(self._payments, "provider_totals", day, currency)


class Background(DependencyProvider):
    """Work an RPC starts and answers before it ends: the container runs it and
    stops it with the service."""

    def get_dependency(self, worker_ctx):
        return self.container.spawn_managed_thread


class AccountsService(ServiceBase):
    name = "accounts"

    db = Database()
    outbox = OutboxRelay()
    transactions = RpcProxy("transactions")
    payments = RpcProxy("payments")
    metrics = ReconciliationMetrics()
    background = Background()

    @rpc
    def open_account(self, owner_id, currency, name=None):
        args = load(
            schemas.OpenAccountArgs, {"owner_id": owner_id, "currency": currency, "name": name}
        )
        return handlers.open_account(
            self.db, str(args["owner_id"]), args["currency"], args["name"], now=utcnow()
        )

    @rpc
    def list_accounts(self, owner_id):
        args = load(schemas.OwnerRef, {"owner_id": owner_id})
        return handlers.list_accounts(self.db, str(args["owner_id"]))

    @rpc
    def get_account(self, owner_id, account_id):
        args = load(schemas.AccountRef, {"owner_id": owner_id, "account_id": account_id})
        return handlers.get_account(self.db, str(args["owner_id"]), str(args["account_id"]))

    @rpc
    def list_transactions(self, owner_id, account_id, limit=50, cursor=None):
        args = load(
            schemas.HistoryArgs,
            {"owner_id": owner_id, "account_id": account_id, "limit": limit, "cursor": cursor},
        )
        return handlers.list_transactions(
            self.db, str(args["owner_id"]), str(args["account_id"]), args["limit"], args["cursor"]
        )

    @rpc
    def check_transfer(self, owner_id, kind, currency, from_account_id=None, to_account_id=None):
        args = load(
            schemas.CheckTransferArgs,
            {
                "owner_id": owner_id,
                "kind": kind,
                "currency": currency,
                "from_account_id": from_account_id,
                "to_account_id": to_account_id,
            },
        )
        as_text = {k: (str(v) if v is not None else None) for k, v in args.items()}
        return handlers.check_transfer(self.db, **as_text)

    @rpc
    def expire_transfer(self, transfer_id):
        """transactions asks this at a transfer's deadline: may it fail now?"""
        args = load(schemas.TransferRef, {"transfer_id": transfer_id})
        return handlers.expire_transfer(self.db, str(args["transfer_id"]), now=utcnow())

    # -- reconciliation ----------------------------------------------------------

    def _peers(self) -> _Peers:
        timeout = config.env_int("RECONCILIATION_RPC_TIMEOUT", 60, 1)
        return _Peers(self.transactions, self.payments, timeout)

    def _reconciler(self) -> reconciliation.Reconciler:
        return reconciliation.Reconciler(self.db, self._peers(), reconciliation.Settings.from_env())

    @timer(interval=RECONCILIATION_INTERVAL or 3600)
    def reconcile(self):
        """The scheduled run: incremental, or a full pass when one is due."""
        if not RECONCILIATION_INTERVAL:
            return
        now = utcnow()
        full = reconciliation.full_pass_due(self.db, now, RECONCILIATION_FULL_EVERY)
        try:
            self._reconciler().run(now=now, full=full)
        except Conflict:
            log.info("reconciliation skipped: another run is in progress")
        except Exception:  # a failed run is stored; the next one tries again
            log.exception("scheduled reconciliation failed")

    @rpc
    def run_reconciliation(self, full=False):
        """Run one now and answer when it has ended (nameko shell, scripts)."""
        args = load(schemas.RunReconciliationArgs, {"full": full})
        return self._reconciler().run(now=utcnow(), full=args["full"], trigger="operator")

    @rpc
    def start_reconciliation(self, full=False):
        """Start one now and answer at once, with the run still running (the
        admin API: a full pass over a large ledger outlasts any HTTP request)."""
        args = load(schemas.RunReconciliationArgs, {"full": full})
        reconciler = self._reconciler()
        run = reconciler.begin(now=utcnow(), full=args["full"], trigger="operator")

        def complete():
            try:
                reconciler.complete(run)
            except Exception:  # stored as a failed run; the container must live on
                log.exception("reconciliation run failed", extra={"run_id": run.run_id})

        self.background(complete, "reconciliation")
        return reconciliation.get_run(self.db, run.run_id)

    @rpc
    def reconciliation_overview(self, status="open", kind=None, limit=200):
        args = load(schemas.DiscrepancyQuery, {"status": status, "kind": kind, "limit": limit})
        status = None if args["status"] == "all" else args["status"]
        return {
            "runs": reconciliation.list_runs(self.db),
            "discrepancies": reconciliation.list_discrepancies(
                self.db, status, args["kind"], args["limit"]
            ),
        }

    @rpc
    def get_reconciliation_run(self, run_id):
        args = load(schemas.RunRef, {"run_id": run_id})
        return reconciliation.get_run(self.db, str(args["run_id"]))

    @rpc
    def resolve_discrepancy(self, discrepancy_id, resolved_by, note):
        args = load(
            schemas.ResolveArgs,
            {"discrepancy_id": discrepancy_id, "resolved_by": resolved_by, "note": note},
        )
        return reconciliation.resolve(
            self.db, str(args["discrepancy_id"]), args["resolved_by"], args["note"], utcnow()
        )

    @rpc
    def daily_report(self, day):
        args = load(schemas.DayArgs, {"day": day})
        return reconciliation.daily_report(self.db, self._peers(), args["day"])

    # -- the transfer saga: the events accounts acts on ---------------------------

    @saga_step(contracts.RISK, contracts.TRANSFER_APPROVED)
    def handle_transfer_approved(self, envelope):
        consumers.handle_transfer_approved(self.db, envelope, utcnow())

    @saga_step(contracts.PAYMENTS, contracts.CARD_CHARGED)
    def handle_card_charged(self, envelope):
        consumers.handle_card_charged(self.db, envelope, utcnow())

    @saga_step(contracts.PAYMENTS, contracts.PAYOUT_SUCCEEDED)
    def handle_payout_succeeded(self, envelope):
        consumers.handle_payout_succeeded(self.db, envelope, utcnow())

    @saga_step(contracts.PAYMENTS, contracts.PAYOUT_FAILED)
    def handle_payout_failed(self, envelope):
        consumers.handle_payout_failed(self.db, envelope, utcnow())

    # A failed payout's hold is released (compensation); other kinds hold nothing.
    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_FAILED, kinds=(contracts.KIND_PAYOUT,))
    def handle_transfer_failed(self, envelope):
        consumers.handle_transfer_failed(self.db, envelope, utcnow())

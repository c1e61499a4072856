"""TransactionsService: creates transfers and folds every saga step into them."""

from datetime import timedelta

import eventlet
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.transactions import consumers, handlers, reconciliation, schemas
from services.transactions.directory import AccountDirectory
from services.transactions.metrics import TransactionsMetrics
from shared import config, contracts
from shared.database import Database
from shared.errors import Unavailable
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import RpcProxy, rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class Directory(DependencyProvider):
    """The accounts this process has seen (see directory.AccountDirectory)."""

    def setup(self):
        self.directory = AccountDirectory()

    def get_dependency(self, worker_ctx):
        return self.directory


class TransactionsService(ServiceBase):
    name = "transactions"

    db = Database()
    outbox = OutboxRelay()
    metrics = TransactionsMetrics()
    accounts = RpcProxy("accounts")
    directory = Directory()

    @rpc
    def create_transfer(self, owner_id, idempotency_key, request, notify=None):
        ids = load(
            schemas.CreateTransferArgs,
            {"owner_id": owner_id, "idempotency_key": idempotency_key, "notify": notify},
        )
        transfer = load(schemas.TransferRequestArgs, request)
        owner = str(ids["owner_id"])

        def ask_accounts():
            # nameko 2's RpcProxy waits forever for a reply; answer the caller
            # (whose own timeout is longer) before it gives up on us.
            timeout = config.env_int("TRANSACTIONS_ACCOUNTS_TIMEOUT", 5, 1)
            try:
                with eventlet.Timeout(timeout):
                    return self.accounts.check_transfer(
                        owner,
                        transfer["kind"],
                        transfer["currency"],
                        transfer["from_account_id"],
                        transfer["to_account_id"],
                    )
            except eventlet.Timeout:
                raise Unavailable(
                    "accounts_unavailable",
                    "Accounts did not answer; retry with the same Idempotency-Key.",
                ) from None

        return handlers.create_transfer(
            self.db,
            self.directory,
            ask_accounts,
            owner,
            ids["idempotency_key"],
            transfer,
            deadline_after=timedelta(seconds=config.env_int("TRANSFER_DEADLINE_SECONDS", 60, 1)),
            now=utcnow(),
            notify=ids["notify"],
        )

    @rpc
    def get_transfer(self, caller_id, transfer_id):
        return handlers.get_transfer(self.db, caller_id, transfer_id)

    @rpc
    def list_transfers(self, caller_id, account_id=None, status=None, limit=50, cursor=None):
        args = load(
            schemas.ListArgs,
            {
                "caller_id": caller_id,
                "account_id": account_id,
                "status": status,
                "limit": limit,
                "cursor": cursor,
            },
        )
        return handlers.list_transfers(
            self.db,
            str(args["caller_id"]),
            str(args["account_id"]) if args["account_id"] else None,
            args["status"],
            args["limit"],
            args["cursor"],
        )

    # -- what the reconciler (accounts) asks ------------------------------------

    @rpc
    def ended_transfers(self, after=0, limit=500, settled_seconds=60):
        args = load(
            schemas.EndedTransfersArgs,
            {"after": after, "limit": limit, "settled_seconds": settled_seconds},
        )
        settled_before = utcnow() - timedelta(seconds=args["settled_seconds"])
        return reconciliation.ended_transfers(self.db, args["after"], args["limit"], settled_before)

    @rpc
    def ended_transfers_by_id(self, after="", limit=500):
        args = load(schemas.EndedByIdArgs, {"after": after, "limit": limit})
        return reconciliation.ended_transfers_by_id(self.db, args["after"], args["limit"])

    @rpc
    def transfer_states(self, transfer_ids):
        args = load(schemas.TransferIds, {"transfer_ids": transfer_ids})
        return reconciliation.transfer_states(self.db, [str(i) for i in args["transfer_ids"]])

    @rpc
    def stuck_transfers(self, grace_seconds=60, limit=500):
        args = load(schemas.StuckArgs, {"grace_seconds": grace_seconds, "limit": limit})
        before = utcnow() - timedelta(seconds=args["grace_seconds"])
        return reconciliation.stuck_transfers(self.db, before, args["limit"])

    @rpc
    def rebuild_projections(self):
        """Operator command: drop the read models and replay every event."""
        return {"events_replayed": handlers.rebuild_projections(self.db)}

    @timer(interval=5)
    def expire_overdue_transfers(self):
        def may_expire(transfer_id):
            try:
                with eventlet.Timeout(config.env_int("TRANSACTIONS_ACCOUNTS_TIMEOUT", 5, 1)):
                    return self.accounts.expire_transfer(transfer_id)["expired"]
            except eventlet.Timeout:
                return False  # no answer, no decision: ask again on the next tick

        handlers.expire_overdue(self.db, may_expire, utcnow())

    # -- every participant's outcome the transfer's history needs, folded in -------

    @saga_step(contracts.RISK, contracts.TRANSFER_REJECTED)
    def handle_transfer_rejected(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.RISK, contracts.TRANSFER_REVIEW_REQUESTED)
    def handle_transfer_review_requested(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.TRANSFER_POSTED)
    def handle_transfer_posted(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.TRANSFER_REFUSED)
    def handle_transfer_refused(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.FUNDS_RESERVED)
    def handle_funds_reserved(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.FUNDS_RELEASED)
    def handle_funds_released(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.DEPOSIT_CREDITED)
    def handle_deposit_credited(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.PAYOUT_CAPTURED)
    def handle_payout_captured(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.PAYMENTS, contracts.CARD_CHARGE_FAILED)
    def handle_card_charge_failed(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

    @saga_step(contracts.PAYMENTS, contracts.PAYOUT_FAILED)
    def handle_payout_failed(self, envelope):
        consumers.handle_saga_step(self.db, envelope, utcnow())

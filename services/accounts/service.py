"""AccountsService: accounts, balances and the ledger over RPC."""

from services.accounts import consumers, handlers, schemas
from shared import contracts
from shared.database import Database
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class AccountsService(ServiceBase):
    name = "accounts"

    db = Database()
    outbox = OutboxRelay()

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

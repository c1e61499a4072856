"""AccountsService: accounts, balances and the ledger over RPC."""

from services.accounts import handlers, schemas
from shared.database import Database
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
            schemas.OpenAccountArgs(), {"owner_id": owner_id, "currency": currency, "name": name}
        )
        return handlers.open_account(
            self.db, str(args["owner_id"]), args["currency"], args["name"], now=utcnow()
        )

    @rpc
    def list_accounts(self, owner_id):
        args = load(schemas.AccountRef(only=("owner_id",)), {"owner_id": owner_id})
        return handlers.list_accounts(self.db, str(args["owner_id"]))

    @rpc
    def get_account(self, owner_id, account_id):
        args = load(schemas.AccountRef(), {"owner_id": owner_id, "account_id": account_id})
        return handlers.get_account(self.db, str(args["owner_id"]), str(args["account_id"]))

    @rpc
    def list_transactions(self, owner_id, account_id, limit=50, cursor=None):
        args = load(
            schemas.HistoryArgs(),
            {"owner_id": owner_id, "account_id": account_id, "limit": limit, "cursor": cursor},
        )
        return handlers.list_transactions(
            self.db, str(args["owner_id"]), str(args["account_id"]), args["limit"], args["cursor"]
        )

"""RiskService: assesses internal transfers and payouts in the transfer saga.

Listens to `transfer_requested` (transactions) and answers each internal
transfer or payout with `transfer_assessed` (approve | reject, a score and
reasons); listens to `account_opened` (accounts) to know each account's
age. The RPCs are for operators and other services, not for customers.
"""

from nameko.extensions import DependencyProvider

from services.risk import handlers, schemas
from services.risk.domain import RiskLimits
from shared import contracts
from shared.database import Database
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow


class Limits(DependencyProvider):
    """The rule set's thresholds, read from RISK_* variables once at start."""

    def setup(self):
        self.limits = RiskLimits.from_env()

    def get_dependency(self, worker_ctx):
        return self.limits


class RiskService(ServiceBase):
    name = "risk"

    db = Database()
    outbox = OutboxRelay()
    limits = Limits()

    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_REQUESTED)
    def handle_transfer_requested(self, envelope):
        handlers.assess_transfer(self.db, envelope, now=utcnow(), limits=self.limits)

    @saga_step(contracts.ACCOUNTS, contracts.ACCOUNT_OPENED)
    def handle_account_opened(self, envelope):
        handlers.record_account_opened(self.db, envelope, now=utcnow())

    @rpc
    def get_assessment(self, transfer_id):
        args = load(schemas.AssessmentRef(), {"transfer_id": transfer_id})
        return handlers.get_assessment(self.db, str(args["transfer_id"]))

    @rpc
    def list_assessments(self, account_id=None, limit=50):
        args = load(schemas.ListAssessmentsArgs(), {"account_id": account_id, "limit": limit})
        account = str(args["account_id"]) if args["account_id"] else None
        return handlers.list_assessments(self.db, account, args["limit"])

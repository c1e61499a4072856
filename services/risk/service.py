"""RiskService: assesses internal transfers and payouts in the transfer saga.

Listens to `transfer_requested` (transactions; internal transfers and
payouts only, deposits are not assessed) and answers each with
`transfer_approved` or `transfer_rejected` (a score and reasons), or holds
it with `transfer_review_requested` until an admin decides, the review
expires (rejected), or the saga fails the transfer (`transfer_failed`: the
review is withdrawn). Listens to `account_opened`
(accounts) for each account's age and owner, and to `login_failed` (auth):
repeated failed logins raise a customer's risk.

The RPCs are for the gateway's admin endpoints and for operators (`nameko
shell`), not for customers: the rules (every version), customers' tiers,
reviews, every assessment, and the audit trail of who changed rules and
tiers and decided reviews (shared/audit.py).
"""

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.risk import consumers, reviews, rulebook, schemas, views
from services.risk.metrics import RiskMetrics
from shared import audit, config, contracts
from shared.database import Database
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay
from shared.rpc import CallerIdentity, rpc
from shared.schemas import load
from shared.service import ServiceBase
from shared.sqltypes import utcnow

# What risk assesses (deposits bring money in: not assessed).
ASSESSED_KINDS = (contracts.KIND_INTERNAL, contracts.KIND_PAYOUT)
# How often held transfers past their review deadline are rejected.
REVIEW_SWEEP_SECONDS = config.env_int("RISK_REVIEW_SWEEP_SECONDS", 15, minimum=1)


class Rules(DependencyProvider):
    """The rules in force, cached per container (see rulebook.RuleCache)."""

    def setup(self):
        self.cache = rulebook.RuleCache()

    def get_dependency(self, worker_ctx):
        return self.cache


def _uuid(value) -> str | None:
    return str(value) if value is not None else None


class RiskService(ServiceBase):
    name = "risk"

    db = Database()
    outbox = OutboxRelay()
    rules = Rules()
    metrics = RiskMetrics()
    caller = CallerIdentity()

    # -- the saga and other events ------------------------------------------

    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_REQUESTED, kinds=ASSESSED_KINDS)
    def handle_transfer_requested(self, envelope):
        consumers.handle_transfer_requested(self.db, envelope, now=utcnow(), cache=self.rules)

    @saga_step(contracts.TRANSACTIONS, contracts.TRANSFER_FAILED, kinds=ASSESSED_KINDS)
    def handle_transfer_failed(self, envelope):
        consumers.handle_transfer_failed(self.db, envelope, now=utcnow())

    @saga_step(contracts.ACCOUNTS, contracts.ACCOUNT_OPENED)
    def handle_account_opened(self, envelope):
        consumers.handle_account_opened(self.db, envelope, now=utcnow())

    @saga_step(contracts.AUTH, contracts.LOGIN_FAILED)
    def handle_login_failed(self, envelope):
        consumers.handle_login_failed(self.db, envelope, now=utcnow())

    @timer(interval=REVIEW_SWEEP_SECONDS)
    def expire_reviews(self):
        reviews.expire_reviews(self.db, utcnow())

    # -- assessments -----------------------------------------------------------

    @rpc
    def get_assessment(self, transfer_id):
        args = load(schemas.AssessmentRef, {"transfer_id": transfer_id})
        return views.get_assessment(self.db, str(args["transfer_id"]))

    @rpc
    def list_assessments(
        self, account_id=None, owner_id=None, decision=None, limit=50, cursor=None
    ):
        args = load(
            schemas.ListAssessmentsArgs,
            {
                "account_id": account_id,
                "owner_id": owner_id,
                "decision": decision,
                "limit": limit,
                "cursor": cursor,
            },
        )
        return views.list_assessments(
            self.db,
            account_id=_uuid(args["account_id"]),
            owner_id=_uuid(args["owner_id"]),
            decision=args["decision"],
            limit=args["limit"],
            cursor=args["cursor"],
        )

    # -- reviews ------------------------------------------------------------------

    @rpc
    def list_reviews(self, status="pending", limit=50, cursor=None):
        args = load(schemas.ListReviewsArgs, {"status": status, "limit": limit, "cursor": cursor})
        return views.list_reviews(self.db, args["status"], args["limit"], args["cursor"])

    @rpc
    def get_review(self, review_id):
        args = load(schemas.ReviewRef, {"review_id": review_id})
        return views.get_review(self.db, str(args["review_id"]))

    @rpc
    def decide_review(self, review_id, decision, decided_by, note=None):
        args = load(
            schemas.DecideReviewArgs,
            {"review_id": review_id, "decision": decision, "decided_by": decided_by, "note": note},
        )
        return reviews.decide_review(
            self.db,
            str(args["review_id"]),
            args["decision"],
            args["decided_by"],
            args["note"],
            utcnow(),
            caller=self.caller,
        )

    # -- rules and customers -----------------------------------------------------

    @rpc
    def get_rules(self, version=None):
        args = load(schemas.RulesRef, {"version": version})
        return rulebook.get_rules(self.db, self.rules, args["version"])

    @rpc
    def list_rule_versions(self, limit=50):
        args = load(schemas.ListRuleVersionsArgs, {"limit": limit})
        return rulebook.list_rule_versions(self.db, args["limit"])

    @rpc
    def put_rules(self, rules, changed_by, comment=None):
        args = load(
            schemas.PutRulesArgs, {"rules": rules, "changed_by": changed_by, "comment": comment}
        )
        return rulebook.put_rules(
            self.db,
            self.rules,
            args["rules"],
            args["changed_by"],
            args["comment"],
            utcnow(),
            caller=self.caller,
        )

    @rpc
    def get_customer(self, user_id):
        args = load(schemas.CustomerRef, {"user_id": user_id})
        return rulebook.get_customer(self.db, self.rules, str(args["user_id"]), utcnow())

    @rpc
    def set_customer_tier(self, user_id, tier, changed_by):
        args = load(
            schemas.SetTierArgs, {"user_id": user_id, "tier": tier, "changed_by": changed_by}
        )
        return rulebook.set_customer_tier(
            self.db,
            self.rules,
            str(args["user_id"]),
            args["tier"],
            args["changed_by"],
            utcnow(),
            caller=self.caller,
        )

    # -- the audit trail ----------------------------------------------------------

    @rpc
    def list_audit(self, after=None, limit=50, action=None):
        """Rule and tier changes and review decisions, newest first (for admins)."""
        args = load(audit.ListAuditArgs, {"after": after, "limit": limit, "action": action})
        return audit.list_entries(self.db, args["after"], args["limit"], args["action"])

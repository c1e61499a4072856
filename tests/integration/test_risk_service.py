"""risk on the real broker and PostgreSQL: a participant of the transfer saga.

Events are published the way their producers' outbox relays publish them
(to "transactions.events" and "accounts.events", routed by event type);
every test uses its own accounts and transfers, so a message left in a
durable queue by another test cannot change what this one sees.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy
from sqlalchemy.orm import sessionmaker

from services.risk import consumers, domain
from services.risk.service import RiskService
from shared import contracts
from shared.database import UnitOfWork, make_engine
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import envelope

ADMIN = str(uuid.uuid4())


@pytest.fixture
def risk(container_factory, config):
    container = container_factory(RiskService, config)
    container.start()
    return container


@pytest.fixture
def rules(risk, rpc):
    """Change the rules for one test (a new version, as an admin would);
    the defaults come back, as a newer version still, afterwards."""

    def change(edit):
        document = domain.RuleSet().to_document()
        edit(document)
        return rpc.risk.put_rules(document, ADMIN, "integration test")

    yield change
    rpc.risk.put_rules(domain.RuleSet().to_document(), ADMIN, "back to the defaults")


@pytest.fixture
def publish(publish_event):
    # Not mandatory: risk binds no queue for deposits, and a test sends one.
    return lambda service, message: publish_event(service, message, mandatory=False)


# risk's final word on a transfer: one of two events, read here as a decision.
VERDICTS = {contracts.TRANSFER_APPROVED: contracts.APPROVE, contracts.TRANSFER_REJECTED: "reject"}


def awaiting(event_tap, *event_types):
    """wait(transfer_id): the next risk event of these types about that transfer
    (others seen meanwhile are kept for later waits), or None. A verdict
    comes with its `decision`."""
    next_event = event_tap("risk")
    seen: list[dict] = []

    def wait(transfer_id, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in seen:
                if event["payload"]["transfer_id"] == transfer_id:
                    seen.remove(event)
                    return event
            message = next_event(timeout=max(deadline - time.monotonic(), 0.05))
            if message is not None and message.payload["type"] in event_types:
                event = dict(message.payload)
                if event["type"] in VERDICTS:
                    event["decision"] = VERDICTS[event["type"]]
                seen.append(event)
        return None

    return wait


@pytest.fixture
def assessed(event_tap):
    return awaiting(event_tap, *VERDICTS)


def carried(payload):
    """The transfer as saga events carry it (every field of the contract)."""
    return contracts.TransferDetails.from_payload(payload).payload()


def transfer(account_id, amount=5_000, kind=contracts.KIND_INTERNAL, currency="EUR", owner=None):
    return {
        "transfer_id": str(uuid.uuid4()),
        "kind": kind,
        "owner_id": owner or str(uuid.uuid4()),
        "amount": amount,
        "currency": currency,
        "from_account_id": None if kind == contracts.KIND_DEPOSIT else account_id,
        "to_account_id": None if kind == contracts.KIND_PAYOUT else str(uuid.uuid4()),
        "reference": "integration",
        "source": {"type": "card", "token": "tok_visa"} if kind == contracts.KIND_DEPOSIT else None,
        "beneficiary": {"name": "Ben", "iban": "DE89370400440532013000"}
        if kind == contracts.KIND_PAYOUT
        else None,
        "deadline": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }


def requested(payload):
    return envelope(contracts.TRANSFER_REQUESTED, payload, correlation_id=f"it-{uuid.uuid4()}")


def request(publish, payload):
    return publish(contracts.TRANSACTIONS, requested(payload))


def stored(sql, transfer_id):
    return sql(
        "risk",
        "SELECT decision, score, reasons, kind, account_id, amount, currency "
        "FROM assessments WHERE transfer_id = :t",
        t=transfer_id,
    )


def test_a_small_transfer_is_approved_and_announced_with_the_transfer(risk, publish, assessed, sql):
    payload = transfer(str(uuid.uuid4()))
    message = request(publish, payload)
    event = assessed(payload["transfer_id"])
    assert event is not None, "no verdict"
    assert event["type"] == contracts.TRANSFER_APPROVED
    assert event["causation_id"] == message["event_id"]
    assert event["correlation_id"] == message["correlation_id"]
    assert event["payload"] == {
        "transfer_id": payload["transfer_id"],
        "score": 10,
        "reasons": [domain.NEW_BENEFICIARY],
        "transfer": carried(payload),
        "review_id": None,
        "decided_by": None,
    }
    assert stored(sql, payload["transfer_id"]) == [
        ("approve", 10, '["new_beneficiary"]', "internal", payload["from_account_id"], 5_000, "EUR")
    ]


def test_an_over_limit_payout_is_rejected_with_reasons(risk, publish, assessed, sql, rpc):
    payload = transfer(str(uuid.uuid4()), amount=1_000_001, kind=contracts.KIND_PAYOUT)
    request(publish, payload)
    event = assessed(payload["transfer_id"])
    assert event["decision"] == contracts.REJECT
    assert event["payload"]["score"] == 100
    assert event["payload"]["reasons"] == [domain.AMOUNT_OVER_LIMIT, domain.NEW_BENEFICIARY]
    assert event["payload"]["transfer"] == carried(payload)
    [(decision, score, _, kind, *_)] = stored(sql, payload["transfer_id"])
    assert (decision, score, kind) == ("reject", 100, "payout")
    assessment = rpc.risk.get_assessment(payload["transfer_id"])
    assert assessment["decision"] == contracts.REJECT
    assert assessment["beneficiary"] == "iban:DE89370400440532013000"


def test_yen_limits_are_in_yen(risk, publish, assessed):
    payload = transfer(str(uuid.uuid4()), amount=1_200_000, currency="JPY")
    request(publish, payload)
    event = assessed(payload["transfer_id"])
    assert event["decision"] == contracts.APPROVE  # JPY 1.2 million


def daily_count(count):
    def edit(document):
        document["tiers"]["standard"]["daily_count"] = count

    return edit


def test_the_nth_transfer_of_the_day_on_one_account_is_rejected(rules, publish, assessed):
    rules(daily_count(3))
    account = str(uuid.uuid4())
    decisions = []
    for _ in range(4):
        payload = transfer(account, amount=1_000)
        request(publish, payload)  # one at a time: the order is the test
        decisions.append(assessed(payload["transfer_id"]))
    assert [d["decision"] for d in decisions] == ["approve"] * 3 + ["reject"]
    assert domain.DAILY_COUNT_EXCEEDED in decisions[-1]["payload"]["reasons"]
    # Other accounts have their own count.
    other = transfer(str(uuid.uuid4()), amount=1_000)
    request(publish, other)
    assert assessed(other["transfer_id"])["decision"] == contracts.APPROVE


def test_concurrent_transfers_cannot_squeeze_past_the_daily_count(rules, publish, assessed, sql):
    rules(daily_count(3))
    account = str(uuid.uuid4())
    payloads = [transfer(account, amount=1_000) for _ in range(8)]
    for payload in payloads:
        request(publish, payload)  # all at once: up to 10 workers assess them together
    decisions = [assessed(p["transfer_id"])["decision"] for p in payloads]
    assert decisions.count(contracts.APPROVE) == 3
    assert sql(
        "risk",
        "SELECT count(*) FROM assessments WHERE account_id = :a AND decision = 'approve'",
        a=account,
    ) == [(3,)]


def test_a_new_account_gets_the_lower_limit(risk, publish, assessed, sql):
    young, old = str(uuid.uuid4()), str(uuid.uuid4())
    opened = envelope(
        contracts.ACCOUNT_OPENED,
        {"account_id": young, "owner_id": str(uuid.uuid4()), "currency": "EUR", "name": "New"},
        correlation_id="it-open",
    )
    publish(contracts.ACCOUNTS, opened)
    deadline = time.monotonic() + 10
    while not sql("risk", "SELECT 1 FROM account_ages WHERE account_id = :a", a=young):
        assert time.monotonic() < deadline, "account_opened not recorded"
        time.sleep(0.05)
    amount = 150_000  # EUR 1,500.00: above a new account's EUR 1,000.00
    new_payload, old_payload = transfer(young, amount=amount), transfer(old, amount=amount)
    request(publish, new_payload)
    request(publish, old_payload)
    rejected = assessed(new_payload["transfer_id"])
    assert rejected["decision"] == contracts.REJECT
    assert domain.NEW_ACCOUNT_LIMIT in rejected["payload"]["reasons"]
    # An account risk never saw open is of unknown age: not new.
    assert assessed(old_payload["transfer_id"])["decision"] == contracts.APPROVE


def test_a_duplicate_delivery_yields_one_assessment_and_one_event(risk, publish, assessed, sql):
    payload = transfer(str(uuid.uuid4()))
    message = requested(payload)
    publish(contracts.TRANSACTIONS, message)
    publish(contracts.TRANSACTIONS, message)  # the same envelope again, at once
    marker = transfer(str(uuid.uuid4()))
    request(publish, marker)
    first = assessed(payload["transfer_id"])
    assert first is not None
    assert assessed(marker["transfer_id"]) is not None
    # The relay publishes at least once: a repeat would carry the same event
    # id (consumers deduplicate by it). A second decision would not.
    again = assessed(payload["transfer_id"], timeout=1.0)
    assert again is None or again["event_id"] == first["event_id"], (first, again)
    assert sql(
        "risk", "SELECT count(*) FROM assessments WHERE transfer_id = :t", t=payload["transfer_id"]
    ) == [(1,)]
    assert sql(
        "risk",
        "SELECT count(*) FROM inbox WHERE event_id = :e AND handler = 'risk.assess_transfer'",
        e=message["event_id"],
    ) == [(1,)]
    assert sql(
        "risk",
        "SELECT count(*) FROM outbox WHERE event_type IN ('transfer_approved', 'transfer_rejected')"
        " AND body LIKE :t",
        t=f'%"transfer_id": "{payload["transfer_id"]}", "score"%',
    ) == [(1,)]


def test_deposits_are_ignored(risk, publish, assessed, sql):
    deposit = transfer(str(uuid.uuid4()), amount=9_999_999_999, kind=contracts.KIND_DEPOSIT)
    request(publish, deposit)
    marker = transfer(str(uuid.uuid4()))
    request(publish, marker)
    assert assessed(marker["transfer_id"]) is not None
    assert assessed(deposit["transfer_id"], timeout=1.0) is None
    assert stored(sql, deposit["transfer_id"]) == []


def test_assessments_are_listed_newest_first_by_account(risk, publish, assessed, rpc):
    account = str(uuid.uuid4())
    first, second = transfer(account, amount=1_000), transfer(account, amount=2_000_000)
    for payload in (first, second):
        request(publish, payload)
        assessed(payload["transfer_id"])
    listed = rpc.risk.list_assessments(account)["items"]
    assert [(a["transfer_id"], a["decision"]) for a in listed] == [
        (second["transfer_id"], contracts.REJECT),
        (first["transfer_id"], contracts.APPROVE),
    ]
    assert len(rpc.risk.list_assessments(account, limit=1)["items"]) == 1
    with pytest.raises(NotFound):
        rpc.risk.get_assessment(str(uuid.uuid4()))
    with pytest.raises(InvalidInput):
        rpc.risk.get_assessment("not-a-uuid")
    with pytest.raises(InvalidInput):
        rpc.risk.list_assessments(account, limit=0)


# -- reviews, rules, failed logins -------------------------------------------------


def open_young_account(publish, sql, owner):
    account = str(uuid.uuid4())
    opened = envelope(
        contracts.ACCOUNT_OPENED,
        {"account_id": account, "owner_id": owner, "currency": "EUR", "name": "New"},
        correlation_id="it-open",
    )
    publish(contracts.ACCOUNTS, opened)
    deadline = time.monotonic() + 10
    while not sql("risk", "SELECT 1 FROM account_ages WHERE account_id = :a", a=account):
        assert time.monotonic() < deadline, "account_opened not recorded"
        time.sleep(0.05)
    return account


@pytest.fixture
def review_requested(event_tap):
    return awaiting(event_tap, contracts.TRANSFER_REVIEW_REQUESTED)


def test_a_held_transfer_waits_for_an_admin_whose_approval_continues_the_saga(
    risk, publish, assessed, review_requested, sql, rpc
):
    owner = str(uuid.uuid4())
    payload = transfer(open_young_account(publish, sql, owner), amount=60_000, owner=owner)
    request(publish, payload)
    asked = review_requested(payload["transfer_id"])
    assert asked is not None, "no transfer_review_requested"
    assert asked["payload"]["owner_id"] == owner
    assert assessed(payload["transfer_id"], timeout=1.0) is None  # held: nothing moves
    review_id = asked["payload"]["review_id"]
    pending = rpc.risk.list_reviews()["items"]
    assert review_id in [r["review_id"] for r in pending]
    with pytest.raises(Forbidden):
        rpc.risk.decide_review(review_id, "approve", owner)  # not on one's own transfer
    decided = rpc.risk.decide_review(review_id, "approve", ADMIN, "called the customer")
    assert decided["status"] == "approved"
    final = assessed(payload["transfer_id"])
    assert final["decision"] == contracts.APPROVE
    assert final["payload"]["transfer"] == carried(payload)
    assert rpc.risk.get_assessment(payload["transfer_id"])["final_decision"] == "approve"
    with pytest.raises(Conflict):
        rpc.risk.decide_review(review_id, "reject", str(uuid.uuid4()))


def test_a_review_nobody_decides_is_rejected_when_its_time_runs_out(
    rules, publish, assessed, review_requested, sql, rpc
):
    rules(lambda document: document.update(review_seconds=1))
    owner = str(uuid.uuid4())
    payload = transfer(open_young_account(publish, sql, owner), amount=60_000, owner=owner)
    request(publish, payload)
    asked = review_requested(payload["transfer_id"])
    final = assessed(payload["transfer_id"], timeout=15.0)  # the sweep runs every second here
    assert final is not None, "the review never expired"
    assert final["decision"] == contracts.REJECT
    assert final["payload"]["reasons"][-1] == domain.REVIEW_EXPIRED
    review = rpc.risk.get_review(asked["payload"]["review_id"])
    assert (review["status"], review["decided_by"]) == ("expired", "system")


def test_rules_change_over_rpc_and_bad_ones_are_refused(rules, publish, assessed, rpc):
    before = rpc.risk.get_rules()
    changed = rules(
        lambda d: d["tiers"]["standard"]["currencies"]["EUR"].update(per_transfer="40.00")
    )
    assert changed["version"] == before["version"] + 1
    payload = transfer(str(uuid.uuid4()), amount=4_001)
    request(publish, payload)
    event = assessed(payload["transfer_id"])
    assert domain.AMOUNT_OVER_LIMIT in event["payload"]["reasons"]
    assert rpc.risk.get_assessment(payload["transfer_id"])["rules_version"] == changed["version"]
    broken = domain.RuleSet().to_document()
    broken["review_score"] = 90
    with pytest.raises(InvalidInput) as error:
        rpc.risk.put_rules(broken, ADMIN)
    assert "rules.review_score" in error.value.errors
    assert rpc.risk.get_rules()["version"] == changed["version"]
    assert rpc.risk.get_rules(before["version"])["rules"] == before["rules"]


def test_failed_logins_from_auth_raise_the_customers_risk(risk, publish, assessed, rpc):
    owner = str(uuid.uuid4())
    for failures in (1, 2, 3):
        publish(
            contracts.AUTH,
            envelope(
                contracts.LOGIN_FAILED,
                {
                    "user_id": owner,
                    "failures": failures,
                    "factor": "password",
                    "locked_until": None,
                },
                correlation_id="it-login",
            ),
        )
    deadline = time.monotonic() + 10
    while not rpc.risk.get_customer(owner)["elevated"]:
        assert time.monotonic() < deadline, "login_failed not recorded"
        time.sleep(0.05)
    profile = rpc.risk.get_customer(owner)
    assert (profile["failed_logins"], profile["tier"]) == (3, "standard")
    payload = transfer(str(uuid.uuid4()), owner=owner)
    request(publish, payload)
    assert domain.FAILED_LOGINS in assessed(payload["transfer_id"])["payload"]["reasons"]


@pytest.fixture
def risk_uow(own_database):
    """A unit of work on a risk database of its own (its outbox rows are no
    other test's to publish) whose sessions keep a time zone far from UTC,
    as a server's default may be."""
    engine = make_engine(own_database("risk"), pool_size=1)

    @sqlalchemy.event.listens_for(engine, "connect")
    def far_from_utc(dbapi_connection, _):
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TimeZone = 'Asia/Kolkata'")  # UTC+05:30
        cursor.close()

    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def test_the_customers_history_is_read_in_utc_hours_and_in_the_assessed_currency(risk_uow):
    """The history rules on PostgreSQL: amounts in another currency are not
    compared, every approved outflow counts toward the usual hours, and those
    hours are UTC hours whatever the session's time zone."""
    owner, source, shop = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    noon = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def assess(amount, currency="EUR", now=noon):
        payload = {**transfer(source, amount=amount, currency=currency, owner=owner)}
        payload["to_account_id"] = shop
        message = requested(payload)
        return consumers.handle_transfer_requested(risk_uow, message, now=now)

    for days_ago, amount in enumerate((2_000, 2_500, 1_800, 2_200, 2_100), start=2):
        assert assess(amount, now=noon - timedelta(days=days_ago))["decision"] == "approve"
    for days_ago in range(8, 13):  # large, but in dollars: not the euro history
        assert assess(90_000, "USD", now=noon - timedelta(days=days_ago))["decision"] == "approve"

    spike = assess(80_000)
    assert spike["reasons"] == [domain.AMOUNT_SPIKE]
    assert spike["signals"]["amount_spike"]["median"] == "21.00"
    # Ten earlier outflows at 12:00 UTC (17:30 in the session's zone).
    assert assess(2_000, now=noon + timedelta(days=1))["reasons"] == []
    at_night = assess(2_000, now=noon + timedelta(days=1, hours=14))
    assert at_night["reasons"] == [domain.UNUSUAL_HOUR]

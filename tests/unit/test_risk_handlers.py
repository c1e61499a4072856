"""risk's use cases on an embedded SQLite database (no broker needed)."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.risk import consumers, domain, reviews, rulebook, views
from services.risk.assessment import MalformedTransfer
from shared import contracts
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import envelope

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = str(uuid.uuid4())


@pytest.fixture
def engine(migrated_sqlite):
    return migrated_sqlite("risk")


def rows(engine, statement, **params):
    with engine.connect() as conn:
        return conn.execute(text(statement), params).all()


def transfer(
    account_id, amount=5_000, kind=contracts.KIND_INTERNAL, currency="EUR", owner=None, to=None
):
    return {
        "transfer_id": str(uuid.uuid4()),
        "kind": kind,
        "owner_id": owner or str(uuid.uuid4()),
        "amount": amount,
        "currency": currency,
        "from_account_id": account_id if kind != contracts.KIND_DEPOSIT else None,
        "to_account_id": (to or str(uuid.uuid4())) if kind != contracts.KIND_PAYOUT else None,
        "reference": "rent",
        "source": None,
        "beneficiary": {"name": "B", "iban": "DE89370400440532013000"}
        if kind == contracts.KIND_PAYOUT
        else None,
        "deadline": (NOW + timedelta(minutes=1)).isoformat(),
    }


def requested(payload):
    return envelope(contracts.TRANSFER_REQUESTED, payload, correlation_id="test")


def assess(uow, payload, now=NOW, cache=None):
    return consumers.handle_transfer_requested(uow, requested(payload), now=now, cache=cache)


def outbox(engine):
    return [json.loads(body) for (body,) in rows(engine, "SELECT body FROM outbox ORDER BY id")]


def opened(account_id, occurred_at=None, owner=None):
    message = envelope(
        contracts.ACCOUNT_OPENED,
        {
            "account_id": account_id,
            "owner_id": owner or str(uuid.uuid4()),
            "currency": "EUR",
            "name": "x",
        },
        correlation_id="test",
    )
    if occurred_at is not None:
        message["occurred_at"] = occurred_at.isoformat()
    return message


def young_account(uow, owner=None):
    account = str(uuid.uuid4())
    consumers.handle_account_opened(uow, opened(account, NOW - timedelta(hours=1), owner), now=NOW)
    return account


def held(uow, owner=None):
    """A transfer the default rules hold for review: a young account sending
    most of its limit to someone new."""
    payload = transfer(young_account(uow, owner), amount=60_000, owner=owner)
    view = assess(uow, payload)
    assert view["decision"] == contracts.REVIEW
    return payload, view


def review_id_of(view):
    return view["review_id"]


def events(engine, event_type, transfer_id=None):
    types = VERDICTS if event_type == VERDICTS else (event_type,)
    return [
        e
        for e in outbox(engine)
        if e["type"] in types
        and (transfer_id is None or e["payload"]["transfer_id"] == transfer_id)
    ]


# risk's final word on a transfer is one of these two events.
VERDICTS = (contracts.TRANSFER_APPROVED, contracts.TRANSFER_REJECTED)
DECISION = {contracts.TRANSFER_APPROVED: contracts.APPROVE, contracts.TRANSFER_REJECTED: "reject"}


def decision_of(event):
    return DECISION[event["type"]]


def carried(payload):
    """The transfer as saga events carry it (every field of the contract)."""
    return contracts.TransferDetails.from_payload(payload).payload()


# -- approve and reject --------------------------------------------------------------


def test_a_small_transfer_is_approved_stored_and_announced(uow, engine):
    payload = transfer(str(uuid.uuid4()))
    message = requested(payload)
    view = consumers.handle_transfer_requested(uow, message, now=NOW)
    assert (view["decision"], view["final_decision"]) == (contracts.APPROVE, contracts.APPROVE)
    assert view["reasons"] == [domain.NEW_BENEFICIARY] and view["score"] == 10
    assert view["owner_id"] == payload["owner_id"]
    assert view["beneficiary"] == f"account:{payload['to_account_id']}"
    assert (view["tier"], view["rules_version"], view["review_id"]) == ("standard", 0, None)
    assert view["signals"]["last_day"] == {"count": 0, "amount": "0.00"}
    assert views.get_assessment(uow, payload["transfer_id"]) == view
    [event] = outbox(engine)
    assert event["type"] == contracts.TRANSFER_APPROVED
    assert event["causation_id"] == message["event_id"]
    assert event["payload"] == {
        "transfer_id": payload["transfer_id"],
        "score": 10,
        "reasons": [domain.NEW_BENEFICIARY],
        "transfer": carried(payload),
        "review_id": None,
        "decided_by": None,
    }


def test_an_over_limit_payout_is_rejected_with_reasons(uow, engine):
    payload = transfer(str(uuid.uuid4()), amount=2_000_000, kind=contracts.KIND_PAYOUT)
    view = assess(uow, payload)
    assert (view["decision"], view["score"]) == (contracts.REJECT, 100)
    assert domain.AMOUNT_OVER_LIMIT in view["reasons"]
    assert view["beneficiary"] == "iban:DE89370400440532013000"
    assert outbox(engine)[0]["payload"]["reasons"] == view["reasons"]


def test_a_duplicate_delivery_changes_nothing(uow, engine):
    message = requested(transfer(str(uuid.uuid4())))
    assert consumers.handle_transfer_requested(uow, message, now=NOW) is not None
    assert consumers.handle_transfer_requested(uow, message, now=NOW) is None
    assert rows(engine, "SELECT count(*) FROM assessments") == [(1,)]
    assert len(outbox(engine)) == 1


def test_a_transfer_is_decided_once_even_if_requested_again(uow, engine):
    payload = transfer(str(uuid.uuid4()), amount=2_000_000)
    first = assess(uow, payload)
    assert first["decision"] == contracts.REJECT
    # A new event for the same transfer, under rules that would now allow it.
    cache = rulebook.RuleCache()
    generous = domain.RuleSet().to_document()
    generous["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] = "100000.00"
    rulebook.put_rules(uow, cache, generous, ADMIN, None, NOW)
    again = assess(uow, payload, now=NOW + timedelta(days=2), cache=cache)
    assert again == first
    repeated = events(engine, VERDICTS, payload["transfer_id"])
    assert [decision_of(e) for e in repeated] == [contracts.REJECT, contracts.REJECT]


def test_deposits_are_not_assessed(uow, engine):
    assert assess(uow, transfer(None, kind=contracts.KIND_DEPOSIT)) is None
    assert rows(engine, "SELECT count(*) FROM assessments") == [(0,)]
    assert rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    assert outbox(engine) == []


# -- velocity, beneficiaries, history -------------------------------------------------


def test_velocity_counts_what_may_move_money_in_each_window(uow):
    account, other = str(uuid.uuid4()), str(uuid.uuid4())
    # More than a day ago: outside both windows, now and two hours ago.
    for _ in range(10):
        assess(uow, transfer(account), now=NOW - timedelta(hours=26, seconds=1))
    # A rejected transfer does not count; another account's do not either.
    assert assess(uow, transfer(account, amount=9_999_999))["decision"] == contracts.REJECT
    assess(uow, transfer(other))
    # Two hours ago: in the day, not in the hour.
    for _ in range(5):
        assess(uow, transfer(account), now=NOW - timedelta(hours=2))
    sixth = assess(uow, transfer(account))
    assert sixth["signals"]["last_hour"]["count"] == 0
    assert sixth["signals"]["last_day"]["count"] == 5
    for _ in range(4):
        assess(uow, transfer(account))
    eleventh = assess(uow, transfer(account))
    assert eleventh["decision"] == contracts.REJECT
    assert domain.DAILY_COUNT_EXCEEDED in eleventh["reasons"]


def test_a_held_transfer_counts_toward_velocity(uow):
    owner = str(uuid.uuid4())
    payload, _ = held(uow, owner)
    following = assess(uow, transfer(payload["from_account_id"], owner=owner))
    assert following["signals"]["last_hour"] == {"count": 1, "amount": "600.00"}


def test_velocity_sums_amounts(uow):
    account = str(uuid.uuid4())
    for hours_ago in (3, 2, 1):
        earlier = NOW - timedelta(hours=hours_ago)
        assert assess(uow, transfer(account, amount=900_000), now=earlier)["decision"] == "approve"
    over = assess(uow, transfer(account, amount=300_001))
    assert over["decision"] == contracts.REJECT
    assert domain.DAILY_AMOUNT_EXCEEDED in over["reasons"]


def test_a_beneficiary_paid_before_is_known_and_own_accounts_are_never_new(uow):
    owner = str(uuid.uuid4())
    source, friend = str(uuid.uuid4()), str(uuid.uuid4())
    assert (
        domain.NEW_BENEFICIARY in assess(uow, transfer(source, owner=owner, to=friend))["reasons"]
    )
    assert assess(uow, transfer(source, owner=owner, to=friend))["reasons"] == []
    # Someone else paying the same friend is paying someone new to them.
    stranger = assess(uow, transfer(str(uuid.uuid4()), to=friend))
    assert domain.NEW_BENEFICIARY in stranger["reasons"]
    savings = str(uuid.uuid4())
    consumers.handle_account_opened(uow, opened(savings, NOW - timedelta(days=30), owner), now=NOW)
    assert assess(uow, transfer(source, owner=owner, to=savings))["reasons"] == []


def test_payout_beneficiaries_are_compared_by_normalised_iban(uow):
    owner = str(uuid.uuid4())
    first = transfer(str(uuid.uuid4()), kind=contracts.KIND_PAYOUT, owner=owner)
    assert domain.NEW_BENEFICIARY in assess(uow, first)["reasons"]
    again = transfer(str(uuid.uuid4()), kind=contracts.KIND_PAYOUT, owner=owner)
    again["beneficiary"] = {"name": "B", "iban": "de89 3704 0044 0532 0130 00"}
    assert assess(uow, again)["reasons"] == []


def test_a_spike_against_the_customers_own_history(uow):
    owner, source, shop = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    for days_ago, amount in enumerate((2_000, 2_500, 1_800, 2_200, 2_100), start=1):
        earlier = NOW - timedelta(days=days_ago)
        assess(uow, transfer(source, amount=amount, owner=owner, to=shop), now=earlier)
    spike = assess(uow, transfer(source, amount=80_000, owner=owner, to=shop))
    assert spike["reasons"] == [domain.AMOUNT_SPIKE]
    assert spike["signals"]["amount_spike"]["median"] == "21.00"


def test_an_unusual_hour_against_the_customers_own_history(uow):
    owner, source, shop = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    for day in range(10):
        assess(uow, transfer(source, owner=owner, to=shop), now=NOW - timedelta(days=day + 2))
    at_noon = assess(uow, transfer(source, owner=owner, to=shop))
    assert at_noon["reasons"] == []
    at_night = assess(uow, transfer(source, owner=owner, to=shop), now=NOW + timedelta(hours=14))
    assert at_night["reasons"] == [domain.UNUSUAL_HOUR]


# -- failed logins -------------------------------------------------------------------------


def login_failed(user_id, at=NOW):
    message = envelope(
        contracts.LOGIN_FAILED,
        {"user_id": user_id, "failures": 1, "factor": "password", "locked_until": None},
        correlation_id="test",
    )
    message["occurred_at"] = at.isoformat()
    return message


def test_repeated_failed_logins_raise_the_customers_risk_for_a_while(uow, engine):
    owner, source, shop = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    assess(uow, transfer(source, owner=owner, to=shop))
    first = login_failed(owner)
    for message in (first, first, login_failed(owner), login_failed(owner)):
        consumers.handle_login_failed(uow, message, now=NOW)  # the first one twice: a duplicate
    profile = rulebook.get_customer(uow, rulebook.RuleCache(), owner, NOW)
    assert (profile["failed_logins"], profile["elevated"]) == (3, True)
    assert profile["last_failed_login_at"] == NOW.isoformat()
    raised = assess(uow, transfer(source, owner=owner, to=shop))
    assert raised["reasons"] == [domain.FAILED_LOGINS]
    assert raised["signals"]["failed_logins"] == 3
    a_day_later = assess(uow, transfer(source, owner=owner, to=shop), now=NOW + timedelta(days=1))
    assert a_day_later["reasons"] == []


def test_a_login_failure_without_a_user_is_an_error(uow):
    message = login_failed("x")
    message["payload"]["user_id"] = None
    with pytest.raises(ValueError, match="user_id"):
        consumers.handle_login_failed(uow, message, now=NOW)


# -- reviews ----------------------------------------------------------------------------------


def test_review_holds_the_transfer_and_asks_for_a_decision(uow, engine):
    payload, view = held(uow)
    assert view["final_decision"] == contracts.REVIEW
    assert events(engine, VERDICTS, payload["transfer_id"]) == []
    [asked] = events(engine, contracts.TRANSFER_REVIEW_REQUESTED)
    assert asked["payload"]["review_id"] == view["review_id"]
    assert asked["payload"]["owner_id"] == payload["owner_id"]
    assert asked["payload"]["transfer"] == carried(payload)
    assert asked["payload"]["expires_at"] == (NOW + timedelta(days=1)).isoformat()
    [pending] = views.list_reviews(uow)["items"]
    assert pending["review_id"] == view["review_id"]
    assert (pending["status"], pending["amount"], pending["score"]) == ("pending", 60_000, 50)


def test_an_admin_approves_and_the_saga_continues(uow, engine):
    payload, view = held(uow)
    decided = reviews.decide_review(uow, view["review_id"], "approve", ADMIN, "known payee", NOW)
    assert (decided["status"], decided["decided_by"], decided["note"]) == (
        "approved",
        ADMIN,
        "known payee",
    )
    [final] = events(engine, VERDICTS, payload["transfer_id"])
    assert decision_of(final) == contracts.APPROVE
    assert final["payload"]["review_id"] == view["review_id"]
    assert final["payload"]["transfer"] == carried(payload)
    assessment = views.get_assessment(uow, payload["transfer_id"])
    assert (assessment["decision"], assessment["final_decision"]) == ("review", "approve")
    # The same admin asking again gets the same answer; nothing more is sent.
    assert reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, NOW) == decided
    assert len(events(engine, VERDICTS, payload["transfer_id"])) == 1
    assert views.list_reviews(uow)["items"] == []
    assert views.list_reviews(uow, "approved")["items"] == [decided]


def test_an_admin_rejects_and_a_second_decision_is_a_conflict(uow, engine):
    payload, view = held(uow)
    reviews.decide_review(uow, view["review_id"], "reject", ADMIN, None, NOW)
    [final] = events(engine, VERDICTS, payload["transfer_id"])
    assert decision_of(final) == contracts.REJECT
    with pytest.raises(Conflict, match="review_closed"):
        reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, NOW)
    with pytest.raises(Conflict, match="review_closed"):
        reviews.decide_review(uow, view["review_id"], "reject", str(uuid.uuid4()), None, NOW)


def test_nobody_decides_on_their_own_transfer(uow, engine):
    _, view = held(uow, owner=ADMIN)
    with pytest.raises(Forbidden, match="own_transfer"):
        reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, NOW)
    assert views.get_review(uow, view["review_id"])["status"] == "pending"


def test_an_unknown_review_is_not_found(uow):
    with pytest.raises(NotFound):
        reviews.decide_review(uow, str(uuid.uuid4()), "approve", ADMIN, None, NOW)
    with pytest.raises(NotFound):
        views.get_review(uow, str(uuid.uuid4()))


def test_an_undecided_review_is_rejected_when_its_time_runs_out(uow, engine):
    payload, view = held(uow)
    assert reviews.expire_reviews(uow, NOW + timedelta(hours=23)) == 0
    later = NOW + timedelta(days=1)
    with pytest.raises(Conflict, match="review_expired"):
        reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, later)
    assert reviews.expire_reviews(uow, later) == 1
    assert reviews.expire_reviews(uow, later) == 0
    [final] = events(engine, VERDICTS, payload["transfer_id"])
    assert decision_of(final) == contracts.REJECT
    assert final["payload"]["reasons"][-1] == domain.REVIEW_EXPIRED
    review = views.get_review(uow, view["review_id"])
    assert (review["status"], review["decided_by"]) == ("expired", reviews.SYSTEM)
    # Asked again for the same transfer, risk repeats the final word.
    assess(uow, payload)
    repeated = events(engine, VERDICTS, payload["transfer_id"])
    assert [decision_of(e) for e in repeated] == [contracts.REJECT] * 2


def test_a_transfer_the_saga_failed_withdraws_its_review(uow, engine):
    payload, view = held(uow)
    failed = envelope(
        contracts.TRANSFER_FAILED,
        {"transfer_id": payload["transfer_id"], "reason": "timed_out"},
        correlation_id="test",
    )
    consumers.handle_transfer_failed(uow, failed, NOW)
    consumers.handle_transfer_failed(uow, failed, NOW)
    review = views.get_review(uow, view["review_id"])
    assert (review["status"], review["note"]) == ("withdrawn", "transfer timed_out")
    assert events(engine, VERDICTS) == []
    assert reviews.expire_reviews(uow, NOW + timedelta(days=2)) == 0
    with pytest.raises(Conflict):
        reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, NOW)


def test_a_pending_review_is_not_announced_twice(uow, engine):
    payload, _ = held(uow)
    assess(uow, payload)  # requested again while an admin looks at it
    assert len(events(engine, contracts.TRANSFER_REVIEW_REQUESTED)) == 1
    assert events(engine, VERDICTS) == []


def test_reviews_are_paged_newest_first(uow):
    ids = [held(uow)[1]["review_id"] for _ in range(3)]
    page = views.list_reviews(uow, "pending", limit=2)
    assert [r["review_id"] for r in page["items"]] == ids[:0:-1]
    rest = views.list_reviews(uow, "pending", limit=2, cursor=int(page["next_cursor"]))
    assert [r["review_id"] for r in rest["items"]] == ids[:1]
    assert rest["next_cursor"] is None
    assert len(views.list_reviews(uow, "all")["items"]) == 3


# -- rules as data ------------------------------------------------------------------------


def test_new_rules_apply_to_the_next_transfer_without_a_restart(uow):
    cache = rulebook.RuleCache()
    account = str(uuid.uuid4())
    assert assess(uow, transfer(account, amount=500_000), cache=cache)["decision"] == "approve"
    stricter = domain.RuleSet().to_document()
    stricter["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] = "4000"
    stored = rulebook.put_rules(uow, cache, stricter, ADMIN, "tighten EUR", NOW)
    assert (stored["version"], stored["created_by"], stored["comment"]) == (1, ADMIN, "tighten EUR")
    assert stored["rules"]["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] == "4000.00"
    after = assess(uow, transfer(account, amount=500_000), cache=cache)
    assert after["decision"] == contracts.REJECT
    assert after["rules_version"] == 1
    # Another instance's cache sees the same version.
    assert rulebook.get_rules(uow, rulebook.RuleCache())["version"] == 1
    assert rulebook.get_rules(uow, cache, version=0)["created_by"] == "built-in"
    assert rulebook.list_rule_versions(uow)["items"][0]["version"] == 1
    with pytest.raises(NotFound):
        rulebook.get_rules(uow, cache, version=9)


def test_bad_rules_are_refused_with_the_field_named_and_nothing_stored(uow):
    cache = rulebook.RuleCache()
    document = domain.RuleSet().to_document()
    document["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] = "1.001"
    document["tiers"]["standard"]["daily_count"] = 0
    with pytest.raises(InvalidInput) as error:
        rulebook.put_rules(uow, cache, document, ADMIN, None, NOW)
    assert "rules.tiers.standard.daily_count" in error.value.errors
    document["tiers"]["standard"]["daily_count"] = 10
    with pytest.raises(InvalidInput) as error:
        rulebook.put_rules(uow, cache, document, ADMIN, None, NOW)
    assert list(error.value.errors) == ["rules.tiers.standard.currencies.EUR.per_transfer"]
    with pytest.raises(InvalidInput) as error:
        rulebook.put_rules(uow, cache, {**document, "surprise": 1}, ADMIN, None, NOW)
    assert "rules.surprise" in error.value.errors
    assert rulebook.list_rule_versions(uow)["items"] == []


def test_a_customer_tier_must_exist_in_the_rules_and_changes_their_limits(uow):
    cache = rulebook.RuleCache()
    owner = str(uuid.uuid4())
    with pytest.raises(InvalidInput, match="unknown_tier"):
        rulebook.set_customer_tier(uow, cache, owner, "premium", ADMIN, NOW)
    document = domain.RuleSet().to_document()
    document["tiers"]["premium"] = {
        "hourly_count": 20,
        "daily_count": 50,
        "currencies": {
            "EUR": {
                "per_transfer": "50000.00",
                "hourly_amount": "100000.00",
                "daily_amount": "200000.00",
            }
        },
    }
    rulebook.put_rules(uow, cache, document, ADMIN, None, NOW)
    amount = 2_000_000
    assert assess(uow, transfer(str(uuid.uuid4()), amount, owner=owner), cache=cache)[
        "decision"
    ] == (contracts.REJECT)
    profile = rulebook.set_customer_tier(uow, cache, owner, "premium", ADMIN, NOW)
    assert profile["tier"] == "premium"
    premium = assess(uow, transfer(str(uuid.uuid4()), amount, owner=owner), cache=cache)
    assert (premium["decision"], premium["tier"]) == (contracts.APPROVE, "premium")


# -- accounts and queries ----------------------------------------------------------------------


def test_a_new_account_gets_the_lower_limit(uow, engine):
    young, old, unknown = (str(uuid.uuid4()) for _ in range(3))
    consumers.handle_account_opened(uow, opened(young, NOW - timedelta(hours=1)), now=NOW)
    consumers.handle_account_opened(uow, opened(old, NOW - timedelta(days=3)), now=NOW)
    amount = 150_000  # above a new account's EUR 1,000.00
    rejected = assess(uow, transfer(young, amount=amount))
    assert rejected["decision"] == contracts.REJECT
    assert domain.NEW_ACCOUNT_LIMIT in rejected["reasons"]
    assert assess(uow, transfer(old, amount=amount))["decision"] == contracts.APPROVE
    assert assess(uow, transfer(unknown, amount=amount))["decision"] == contracts.APPROVE


def test_account_opened_is_recorded_once(uow, engine):
    account = str(uuid.uuid4())
    first = opened(account, NOW - timedelta(hours=1))
    consumers.handle_account_opened(uow, first, now=NOW)
    consumers.handle_account_opened(uow, first, now=NOW)  # duplicate delivery
    consumers.handle_account_opened(uow, opened(account, NOW), now=NOW)  # a second report
    [(opened_at,)] = rows(engine, "SELECT opened_at FROM account_ages")
    assert opened_at.startswith("2026-03-01 11:00")
    assert rows(engine, "SELECT count(*) FROM inbox") == [(2,)]


def test_an_account_opened_without_a_usable_time_is_dated_now(uow, engine):
    account = str(uuid.uuid4())
    message = opened(account)
    message["occurred_at"] = "yesterday"
    consumers.handle_account_opened(uow, message, now=NOW)
    assert assess(uow, transfer(account, amount=150_000))["decision"] == contracts.REJECT


def test_assessments_are_queryable_by_account_customer_and_decision(uow):
    owner, account = str(uuid.uuid4()), str(uuid.uuid4())
    first = assess(uow, transfer(account, owner=owner))
    second = assess(uow, transfer(account, amount=2_000_000, owner=owner))
    assess(uow, transfer(str(uuid.uuid4())))
    listed = views.list_assessments(uow, account_id=account)
    assert [a["transfer_id"] for a in listed["items"]] == [
        second["transfer_id"],
        first["transfer_id"],
    ]
    assert views.list_assessments(uow, owner_id=owner)["items"] == listed["items"]
    rejected = views.list_assessments(uow, decision=contracts.REJECT)["items"]
    assert [a["transfer_id"] for a in rejected] == [second["transfer_id"]]
    page = views.list_assessments(uow, limit=2)
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = views.list_assessments(uow, limit=2, cursor=int(page["next_cursor"]))
    assert [a["transfer_id"] for a in rest["items"]] == [first["transfer_id"]]
    json.dumps(listed)
    assert listed["items"][0]["assessed_at"] == NOW.isoformat()
    with pytest.raises(NotFound):
        views.get_assessment(uow, str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_account_id", None),
        ("amount", 0),
        ("amount", "5.00"),
        ("currency", None),
        ("currency", "XYZ"),
        ("owner_id", 7),
    ],
)
def test_a_malformed_transfer_is_an_error_not_a_decision(uow, engine, field, value):
    payload = transfer(str(uuid.uuid4()))
    payload[field] = value
    with pytest.raises(MalformedTransfer):
        assess(uow, payload)
    assert rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


def test_nobody_decides_on_a_transfer_paying_them(uow):
    admin_account = str(uuid.uuid4())
    consumers.handle_account_opened(uow, opened(admin_account, NOW - timedelta(days=9), ADMIN), NOW)
    payload = transfer(young_account(uow), amount=60_000, to=admin_account)
    view = assess(uow, payload)
    assert view["decision"] == contracts.REVIEW
    assert views.get_review(uow, view["review_id"])["recipient_id"] == ADMIN
    with pytest.raises(Forbidden, match="own_transfer"):
        reviews.decide_review(uow, view["review_id"], "approve", ADMIN, None, NOW)


def test_a_transfer_failed_before_risk_saw_it_is_never_held(uow, engine):
    payload = transfer(young_account(uow), amount=60_000)
    failed = envelope(
        contracts.TRANSFER_FAILED,
        {"transfer_id": payload["transfer_id"], "reason": "timed_out"},
        correlation_id="test",
    )
    consumers.handle_transfer_failed(uow, failed, NOW)  # the deadline passed while risk was away
    view = assess(uow, payload, now=NOW + timedelta(minutes=5))
    assert (view["decision"], view["final_decision"], view["review_id"]) == (
        contracts.REVIEW,
        contracts.REJECT,
        None,
    )
    assert views.list_reviews(uow, "all")["items"] == []
    assert outbox(engine) == []  # nobody is told of a review that cannot matter


def test_rows_from_before_final_decision_read_as_their_decision(uow, engine):
    owner, source, shop = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    assess(uow, transfer(source, owner=owner, to=shop))
    with engine.begin() as conn:
        conn.execute(text("UPDATE assessments SET final_decision = NULL"))
    [old] = views.list_assessments(uow, owner_id=owner)["items"]
    assert old["final_decision"] == contracts.APPROVE
    # Still counted: the beneficiary is known, the account's velocity includes it.
    again = assess(uow, transfer(source, owner=owner, to=shop))
    assert again["reasons"] == []
    assert again["signals"]["last_hour"]["count"] == 1


def test_rules_stored_by_an_earlier_release_stay_usable(uow, engine):
    older = domain.RuleSet().to_document()
    del older["tiers"]["standard"]["currencies"]["JPY"]  # a currency added since
    del older["amount_spike"]["min_limit_percent"]  # a field added since
    older["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] = "4000.00"
    older["tiers"]["standard"]["currencies"]["XTS"] = {  # a currency dropped since
        "per_transfer": "1",
        "hourly_amount": "1",
        "daily_amount": "1",
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rule_sets (version, document, created_at, created_by) "
                "VALUES (1, :doc, :at, 'earlier release')"
            ),
            {"doc": json.dumps(older), "at": NOW},
        )
    rules = rulebook.RuleCache().current(engine_session(engine))
    assert rules.version == 1
    assert rules.limits(None, "EUR").per_transfer == 400_000  # the admin's value kept
    assert rules.limits(None, "JPY").per_transfer == 1_500_000  # the built-in default
    assert rules.spike_min_limit_percent == 1


def test_unreadable_stored_rules_never_stop_assessments(uow, engine):
    cache = rulebook.RuleCache()
    generous = domain.RuleSet().to_document()
    rulebook.put_rules(uow, cache, generous, ADMIN, None, NOW)
    broken = {**generous, "review_score": 95}  # above reject_score: refused on read
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rule_sets (version, document, created_at, created_by) "
                "VALUES (2, :doc, :at, 'hand edit')"
            ),
            {"doc": json.dumps(broken), "at": NOW},
        )
    view = assess(uow, transfer(str(uuid.uuid4())), cache=cache)
    assert (view["decision"], view["rules_version"]) == (contracts.APPROVE, 1)


def engine_session(engine):
    return sessionmaker(engine)()

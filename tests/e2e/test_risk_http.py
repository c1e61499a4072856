"""Risk over HTTP on the real platform: transfers held for review, the admin's
decision continuing or compensating the saga, rules and tiers changed
without a restart, failed logins raising a customer's risk."""

import time
import uuid

import pytest

from tests.e2e.helpers import Customer, assert_problem, make_admin

REVIEWS = "/v1/admin/risk/reviews"


@pytest.fixture(scope="module")
def admin(api):
    _, token = make_admin(api)
    return token


def held_transfer(api, alice, bob_account, amount="600.00"):
    """The default rules hold a young account sending most of its limit to
    someone new (new account + large amount + new beneficiary)."""
    source = alice.funded("800.00")
    transfer_id = alice.transfer(source, bob_account, amount)
    view = wait_for_step(alice, transfer_id, "transfer_review_requested")
    assert view["status"] == "pending"
    return source, transfer_id


def wait_for_step(customer, transfer_id, step, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = customer.transfer_view(transfer_id)
        if step in [s["type"] for s in view["steps"]]:
            return view
        time.sleep(0.1)
    pytest.fail(f"transfer {transfer_id} never reached {step}: {view}")


def review_of(api, admin, transfer_id):
    response = api.get(f"{REVIEWS}?status=all&limit=200", token=admin)
    assert response.status_code == 200, response.text
    [review] = [r for r in response.json()["items"] if r["transfer_id"] == transfer_id]
    return review


def decide(api, admin, review_id, decision, note=None):
    body = {"decision": decision} | ({"note": note} if note else {})
    return api.post(f"{REVIEWS}/{review_id}/decision", token=admin, json=body)


def test_an_admin_approves_a_held_transfer_and_it_completes(api, admin):
    alice, bob = Customer(api), Customer(api)
    target = bob.open()
    source, transfer_id = held_transfer(api, alice, target)
    review = review_of(api, admin, transfer_id)
    assert (review["status"], review["amount"], review["currency"]) == ("pending", "600.00", "EUR")
    assert {"new_account", "large_amount", "new_beneficiary"} <= set(review["reasons"])
    assert review["owner_id"] == alice.user["user_id"]
    # Held: nothing reserved while it waits.
    assert alice.account(source)["available_balance"] == "800.00"
    # Customers cannot see or decide reviews.
    assert_problem(api.get(REVIEWS, token=alice.token), 403, "forbidden")
    assert_problem(
        api.post(
            f"{REVIEWS}/{review['review_id']}/decision",
            token=alice.token,
            json={"decision": "approve"},
        ),
        403,
    )
    assert_problem(decide(api, admin, review["review_id"], "maybe"), 422)
    response = decide(api, admin, review["review_id"], "approve", "verified by phone")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["note"]) == ("approved", "verified by phone")
    view = alice.settled(transfer_id)
    assert view["status"] == "completed"
    assert alice.account(source)["balance"] == "200.00"
    assert bob.account(target)["balance"] == "600.00"
    assert_problem(decide(api, admin, review["review_id"], "reject"), 409, "review_closed")
    # The customer was told their transfer is being reviewed.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = api.get("/v1/notifications", token=alice.token).json()["items"]
        if "risk_review" in {item["template"] for item in items}:
            break
        time.sleep(0.2)
    else:
        pytest.fail("no risk_review notification")
    # Every decision stays queryable.
    response = api.get(
        f"/v1/admin/risk/assessments?customer_id={alice.user['user_id']}", token=admin
    )
    assert response.status_code == 200, response.text
    assessments = response.json()["items"]
    [assessment] = [a for a in assessments if a["transfer_id"] == transfer_id]
    assert (assessment["decision"], assessment["final_decision"]) == ("review", "approve")
    assert assessment["review_id"] == review["review_id"]


def test_an_admin_rejects_a_held_transfer_and_nothing_moves(api, admin):
    alice, bob = Customer(api), Customer(api)
    target = bob.open()
    source, transfer_id = held_transfer(api, alice, target)
    review = review_of(api, admin, transfer_id)
    response = decide(api, admin, review["review_id"], "reject")
    assert response.status_code == 200, response.text
    view = alice.settled(transfer_id)
    assert (view["status"], view["failure_reason"]) == ("failed", "risk_rejected")
    account = alice.account(source)
    assert (account["balance"], account["available_balance"]) == ("800.00", "800.00")
    assert bob.account(target)["balance"] == "0.00"


def test_an_admin_may_not_decide_on_their_own_transfer(api):
    admin_customer = Customer(api, *make_admin(api))
    token = admin_customer.token
    target = Customer(api).open()
    _, transfer_id = held_transfer(api, admin_customer, target)
    review = review_of(api, token, transfer_id)
    assert_problem(decide(api, token, review["review_id"], "approve"), 403, "own_transfer")


def test_failed_logins_raise_a_customers_risk(api, admin):
    alice, bob = Customer(api), Customer(api)
    for _ in range(3):
        wrong = {"email": alice.user["email"], "password": "not the password at all"}
        assert api.post("/v1/auth/login", json=wrong).status_code == 401
    profile_path = f"/v1/admin/risk/customers/{alice.user['user_id']}"
    deadline = time.monotonic() + 20
    while not (profile := api.get(profile_path, token=admin).json())["elevated"]:
        assert time.monotonic() < deadline, profile
        time.sleep(0.2)
    assert profile["failed_logins"] == 3
    # A small first transfer, harmless on its own, is now held for review.
    source = alice.funded("50.00")
    transfer_id = alice.transfer(source, bob.open(), "5.00")
    wait_for_step(alice, transfer_id, "transfer_review_requested")
    assert "failed_logins" in review_of(api, admin, transfer_id)["reasons"]


def test_rules_and_tiers_change_without_a_restart(api, admin):
    current = api.get("/v1/admin/risk/rules", token=admin).json()
    rules = current["rules"]
    assert rules["tiers"]["standard"]["currencies"]["EUR"]["per_transfer"] == "10000.00"
    # A bad document is refused, naming the field, and changes nothing.
    broken = {**rules, "review_score": 95}
    problem = assert_problem(
        api.put("/v1/admin/risk/rules", token=admin, json={"rules": broken}), 422
    )
    assert "rules.review_score" in problem["errors"]
    premium = {
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
    # Accounts opened in this test are young; judge them as any other here.
    with_premium = {
        **rules,
        "tiers": {**rules["tiers"], "premium": premium},
        "new_account": {**rules["new_account"], "hours": 0},
    }
    response = api.put(
        "/v1/admin/risk/rules", token=admin, json={"rules": with_premium, "comment": "premium"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == current["version"] + 1
    try:
        alice, bob = Customer(api), Customer(api)
        tier = api.put(
            f"/v1/admin/risk/customers/{alice.user['user_id']}",
            token=admin,
            json={"tier": "premium"},
        )
        assert tier.status_code == 200, tier.text
        assert tier.json()["tier"] == "premium"
        # EUR 15,000 is over the standard limit (rejected at once for anyone
        # else, see test_money_http) and within premium's.
        source = alice.funded("20000.00")
        view = alice.settled(alice.transfer(source, bob.open(), "15000.00"))
        assert view["status"] == "completed", view
        versions = api.get("/v1/admin/risk/rules/versions", token=admin).json()["items"]
        assert versions[0]["comment"] == "premium"
    finally:
        restored = api.put(
            "/v1/admin/risk/rules", token=admin, json={"rules": rules, "comment": "defaults"}
        )
        assert restored.status_code == 200, restored.text


def test_unknown_reviews_and_tiers_are_clear_errors(api, admin):
    assert_problem(decide(api, admin, str(uuid.uuid4()), "approve"), 404, "review_not_found")
    user = str(uuid.uuid4())
    problem = assert_problem(
        api.put(f"/v1/admin/risk/customers/{user}", token=admin, json={"tier": "platinum"}), 422
    )
    assert "tier" in problem["errors"]

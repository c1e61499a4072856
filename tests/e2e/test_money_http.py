"""Money movement over HTTP, through the whole saga on the real platform."""

import random
import time
import uuid
from decimal import Decimal

import eventlet

from tests.e2e.helpers import FAILING_IBAN, Customer, assert_problem


def test_a_card_deposit_credits_the_account(api):
    alice = Customer(api)
    account_id = alice.open()
    view = alice.settled(alice.deposit(account_id, "12.34"))
    assert (view["status"], view["kind"], view["amount"]) == ("completed", "deposit", "12.34")
    assert [s["type"] for s in view["steps"]] == ["card_charged", "deposit_credited"]
    assert alice.account(account_id)["balance"] == "12.34"
    history = api.get(f"/v1/accounts/{account_id}/transactions", token=alice.token).json()
    assert [(i["amount"], i["transfer_id"]) for i in history["items"]] == [
        ("12.34", view["transfer_id"])
    ]


def test_a_declined_card_fails_the_deposit_and_moves_nothing(api):
    alice = Customer(api)
    account_id = alice.open()
    view = alice.settled(alice.deposit(account_id, "50.00", token="tok_declined"))
    assert (view["status"], view["failure_reason"]) == ("failed", "card_declined")
    assert alice.account(account_id)["balance"] == "0.00"


def test_an_internal_transfer_moves_money_between_users(api):
    alice, bob, eve = Customer(api), Customer(api), Customer(api)
    source = alice.funded("100.00")
    target = bob.open()
    transfer_id = alice.transfer(source, target, "30.50")
    view = alice.settled(transfer_id)
    assert view["status"] == "completed", view
    # Both accounts are in one ledger: risk's approval is posted at once, no hold.
    assert [s["type"] for s in view["steps"]] == ["transfer_approved", "transfer_posted"]
    assert alice.account(source)["balance"] == "69.50"
    assert bob.account(target)["balance"] == "30.50"
    assert bob.transfer_view(transfer_id)["status"] == "completed"  # either side's owner
    assert_problem(api.get(f"/v1/transfers/{transfer_id}", token=eve.token), 404)


def test_without_enough_money_the_transfer_fails_and_nothing_moves(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("10.00"), bob.open()
    view = alice.settled(alice.transfer(source, target, "10.01"))
    assert (view["status"], view["failure_reason"]) == ("failed", "insufficient_funds")
    assert alice.account(source)["available_balance"] == "10.00"
    assert bob.account(target)["balance"] == "0.00"


def test_risk_rejects_a_transfer_over_the_limit(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("20000.00"), bob.open()
    view = alice.settled(alice.transfer(source, target, "15000.00"))
    assert (view["status"], view["failure_reason"]) == ("failed", "risk_rejected")
    assert alice.account(source)["balance"] == "20000.00"


def test_a_payout_pays_out_and_a_refused_one_gives_the_money_back(api):
    alice = Customer(api)
    source = alice.funded("100.00")
    paid = alice.settled(alice.payout(source, "40.00"))
    assert paid["status"] == "completed", paid
    assert [s["type"] for s in paid["steps"]] == [
        "transfer_approved",
        "funds_reserved",
        "payout_succeeded",
        "payout_captured",
    ]
    assert alice.account(source)["balance"] == "60.00"
    refused = alice.settled(alice.payout(source, "25.00", iban=FAILING_IBAN))
    assert (refused["status"], refused["failure_reason"]) == ("failed", "payout_failed")
    deadline = time.monotonic() + 10  # the hold is released as the failure's compensation
    while alice.account(source)["available_balance"] != "60.00" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.account(source) | {"created_at": None} == alice.account(source) | {
        "balance": "60.00",
        "available_balance": "60.00",
        "created_at": None,
    }


def test_bad_money_requests_are_422_at_once(api):
    alice = Customer(api)
    eur, usd = alice.funded("10.00"), alice.open("USD")
    for body, field in (
        ({"to_account_id": usd, "amount": "1.00"}, "currency"),  # currency mismatch
        ({"to_account_id": eur, "amount": 1.0}, "amount"),  # a JSON number
        ({"to_account_id": eur, "amount": "1.001"}, "amount"),  # too many decimals
        ({"to_account_id": eur, "amount": "0.00"}, "amount"),  # zero
        ({"to_account_id": eur, "amount": "-1.00"}, "amount"),  # negative
        ({"to_account_id": str(uuid.uuid4()), "amount": "1.00"}, "to_account_id"),
    ):
        response = alice.post("/v1/transfers", {"from_account_id": eur, "currency": "EUR", **body})
        assert field in assert_problem(response, 422)["errors"], body
    unknown = alice.post(
        "/v1/transfers",
        {"from_account_id": eur, "to_account_id": usd, "amount": "1.00", "currency": "XYZ"},
    )
    assert "currency" in assert_problem(unknown, 422)["errors"]
    bad_iban = alice.post(
        "/v1/payouts",
        {
            "from_account_id": eur,
            "amount": "1.00",
            "currency": "EUR",
            "beneficiary": {"name": "X", "iban": "DE00123"},
        },
    )
    assert "beneficiary" in assert_problem(bad_iban, 422)["errors"]
    listed = api.get(f"/v1/transfers?account_id={eur}", token=alice.token).json()["items"]
    assert [item["kind"] for item in listed] == ["deposit"]  # nothing else was recorded


def test_idempotency_keys_replay_conflict_and_are_required(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("50.00"), bob.open()
    body = {"from_account_id": source, "to_account_id": target, "amount": "5.00", "currency": "EUR"}
    first = alice.post("/v1/transfers", body, key="rent-2026-11")
    again = alice.post("/v1/transfers", body, key="rent-2026-11")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    alice.settled(first.json()["transfer_id"])
    assert alice.account(source)["balance"] == "45.00"  # moved once
    other = alice.post("/v1/transfers", {**body, "amount": "6.00"}, key="rent-2026-11")
    assert_problem(other, 409, "idempotency_key_reused")
    missing = api.post("/v1/transfers", token=alice.token, json=body)
    assert_problem(missing, 400, "idempotency_key_required")
    too_long = alice.post("/v1/transfers", body, key="k" * 256)
    assert_problem(too_long, 400, "idempotency_key_required")


def test_transfers_are_listed_per_account_and_status_with_a_cursor(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("50.00"), bob.open()
    ids = [alice.settled(alice.transfer(source, target, "1.00"))["transfer_id"] for _ in range(3)]
    page = api.get(
        f"/v1/transfers?account_id={source}&status=completed&limit=2", token=alice.token
    ).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.get(
        f"/v1/transfers?account_id={source}&status=completed&limit=2&cursor={page['next_cursor']}",
        token=alice.token,
    ).json()
    listed = [item["transfer_id"] for item in page["items"] + rest["items"]]
    assert listed[:3] == ids[::-1]  # newest first; the deposit comes last
    assert api.get(f"/v1/transfers?account_id={target}", token=bob.token).json()["items"]


def test_concurrent_transfers_conserve_money_and_never_overdraw(api):
    customers = [Customer(api) for _ in range(3)]
    accounts = [(c, c.funded("20.00")) for c in customers for _ in range(2)]  # 6 x 20.00
    rng = random.Random(7)
    plans = []
    for _ in range(40):
        (payer, source), (_, target) = rng.sample(accounts, 2)
        plans.append((payer, source, target, f"{rng.randint(1, 900) / 100:.2f}"))

    def send(plan):
        payer, source, target, amount = plan
        return payer, payer.transfer(source, target, amount)

    started = list(eventlet.GreenPool(10).imap(send, plans))
    outcomes = [payer.settled(transfer_id, timeout=90)["status"] for payer, transfer_id in started]
    assert set(outcomes) <= {"completed", "failed"}
    balances = [Decimal(owner.account(account_id)["balance"]) for owner, account_id in accounts]
    assert sum(balances) == Decimal("120.00")  # not a cent created or lost
    assert min(balances) >= 0
    for owner, account_id in accounts:
        view = owner.account(account_id)
        assert view["available_balance"] == view["balance"]  # every hold settled
    assert "completed" in outcomes


def test_a_participant_killed_mid_saga_finishes_it_after_restart(api):
    alice, bob = Customer(api), Customer(api)
    source = alice.funded("30.00")
    target = bob.open()

    api.kill("payments")  # the deposit is accepted; its charge waits in payments' queue
    try:
        deposit_id = alice.deposit(source, "5.00")
        time.sleep(1.0)
        assert alice.transfer_view(deposit_id)["status"] == "pending"
    finally:
        api.restart_service("payments")
    assert alice.settled(deposit_id, timeout=60)["status"] == "completed"

    transfer_id = alice.transfer(source, target, "7.00")
    api.kill("accounts")  # somewhere between reserving and posting, or just before
    time.sleep(1.0)
    api.restart_service("accounts")
    assert alice.settled(transfer_id, timeout=60)["status"] == "completed"
    assert alice.account(source)["balance"] == "28.00"
    assert bob.account(target)["balance"] == "7.00"


def test_after_a_503_a_retry_with_the_same_key_makes_exactly_one_transfer(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("30.00"), bob.open()
    body = {"from_account_id": source, "to_account_id": target, "amount": "3.00", "currency": "EUR"}
    api.kill("transactions")
    try:
        # Nobody takes the request in time: 503. It may still be processed
        # later, from the durable queue, which is what the key is for.
        assert_problem(alice.post("/v1/transfers", body, key="retry-me"), 503)
    finally:
        api.restart_service("transactions")
    deadline = time.monotonic() + 30
    while True:
        response = alice.post("/v1/transfers", body, key="retry-me")
        if response.status_code == 202 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 202, response.text
    assert alice.settled(response.json()["transfer_id"])["status"] == "completed"
    time.sleep(1.0)
    assert alice.account(source)["balance"] == "27.00"  # debited once
    listed = api.get(
        f"/v1/transfers?account_id={source}&status=completed", token=alice.token
    ).json()["items"]
    assert [item["kind"] for item in listed] == ["internal", "deposit"]


def test_a_transfer_stuck_past_its_deadline_fails_and_is_compensated(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("30.00"), bob.open()
    api.kill("risk")  # nobody assesses: the saga cannot progress
    try:
        transfer_id = alice.transfer(source, target, "5.00")
        view = alice.settled(transfer_id, timeout=60)  # deadline 30 s, checked every 5 s
    finally:
        api.restart_service("risk")
    assert (view["status"], view["failure_reason"]) == ("failed", "timed_out")
    time.sleep(3)  # risk is back and assesses the old request: it must change nothing
    assert alice.account(source)["balance"] == "30.00"
    assert alice.account(source)["available_balance"] == "30.00"
    assert bob.account(target)["balance"] == "0.00"


def test_a_client_that_prefers_to_wait_gets_the_ended_transfer_in_one_request(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("50.00"), bob.open()
    body = {"from_account_id": source, "to_account_id": target, "amount": "5.00", "currency": "EUR"}
    key = str(uuid.uuid4())
    deadline = time.monotonic() + 10
    while True:  # the gateway's outcome feed connects on its first authenticated request
        done = alice.post("/v1/transfers", body, key=key, headers={"Prefer": "wait=5"})
        if done.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
        key = str(uuid.uuid4())
    assert done.status_code == 201, done.text
    view = done.json()
    assert (view["status"], view["amount"], view["kind"]) == ("completed", "5.00", "internal")
    assert [s["type"] for s in view["steps"]] == ["transfer_approved", "transfer_posted"]
    assert done.headers["Preference-Applied"] == "wait=5"
    assert done.headers["Location"] == f"/v1/transfers/{view['transfer_id']}"
    # It is what GET shows, and the same key answers the same transfer again.
    assert alice.transfer_view(view["transfer_id"]) == view
    again = alice.post("/v1/transfers", body, key=key, headers={"Prefer": "wait=5"})
    assert again.json()["transfer_id"] == view["transfer_id"]
    # Without the preference the contract is unchanged: 202, pending.
    plain = alice.post("/v1/transfers", body)
    assert plain.status_code == 202 and plain.json()["status"] == "pending"
    waited = api.get(
        f"/v1/transfers/{plain.json()['transfer_id']}",
        token=alice.token,
        headers={"Prefer": "wait=5"},
    )
    assert waited.status_code == 200 and waited.json()["status"] == "completed"
    failed = alice.post("/v1/transfers", {**body, "amount": "500.00"}, headers={"Prefer": "wait=5"})
    assert failed.status_code == 201
    assert (failed.json()["status"], failed.json()["failure_reason"]) == (
        "failed",
        "insufficient_funds",
    )
    assert_problem(
        api.get(
            f"/v1/transfers/{view['transfer_id']}",
            token=Customer(api).token,
            headers={"Prefer": "wait=1"},
        ),
        404,
    )

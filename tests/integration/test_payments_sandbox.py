"""The payment sandbox as a process over HTTP: outcomes, idempotency, faults, webhooks."""

import json
import time
import uuid

import pytest
import requests

from shared import webhooks
from tests.integration.sandbox import WEBHOOK_SECRET, WebhookInbox, running_payments_sandbox

GOOD_IBAN = "DE89370400440532013000"
FAILING_IBAN = "DE94370400440532010000"  # ends in 0000: the documented failing IBAN


@pytest.fixture(scope="module")
def inbox():
    with WebhookInbox() as receiving:
        yield receiving


@pytest.fixture(scope="module")
def sandbox(inbox):
    with running_payments_sandbox(webhook_url=inbox.url) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(sandbox, inbox):
    sandbox.reset()
    while not inbox.received.empty():
        inbox.received.get_nowait()


def key() -> str:
    return str(uuid.uuid4())


def charge(card="tok_ok", amount=1250, currency="EUR"):
    return {"amount": amount, "currency": currency, "token": card}


def test_tok_ok_is_charged(sandbox):
    response = sandbox.post("/v1/charges", charge(), key())
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "succeeded" and body["id"].startswith("ch_")
    assert body["amount"] == 1250 and body["currency"] == "EUR"
    assert sandbox.session.get(f"{sandbox.url}/v1/charges/{body['id']}").json() == body


def test_tok_declined_is_declined_as_card_declined(sandbox):
    response = sandbox.post("/v1/charges", charge("tok_declined"), key())
    assert response.status_code == 402
    assert response.json()["status"] == "failed"
    assert response.json()["failure_code"] == "card_declined"


def test_an_unknown_token_is_refused(sandbox):
    response = sandbox.post("/v1/charges", charge("tok_made_up"), key())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_token"


def test_replaying_a_key_returns_the_first_answer_and_charges_once(sandbox):
    k = key()
    first = sandbox.post("/v1/charges", charge(), k)
    again = sandbox.post("/v1/charges", charge(), k)
    assert again.status_code == first.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sandbox.stats()["created"]["charge"] == 1
    # A decline is an answer too: replayed, not retried.
    declined = key()
    assert sandbox.post("/v1/charges", charge("tok_declined"), declined).status_code == 402
    assert sandbox.post("/v1/charges", charge("tok_declined"), declined).status_code == 402
    assert sandbox.stats()["created"]["charge"] == 2


def test_the_same_key_with_another_body_is_409(sandbox):
    k = key()
    assert sandbox.post("/v1/charges", charge(amount=100), k).status_code == 201
    reused = sandbox.post("/v1/charges", charge(amount=200), k)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    other_path = sandbox.post(
        "/v1/payouts",
        {"amount": 100, "currency": "EUR", "beneficiary": {"name": "A", "iban": GOOD_IBAN}},
        k,
    )
    assert other_path.status_code == 409
    assert sandbox.stats()["created"]["charge"] == 1


def test_requests_need_the_api_key_and_an_idempotency_key(sandbox):
    no_key = sandbox.post("/v1/charges", charge())
    assert no_key.status_code == 400
    assert no_key.json()["error"]["code"] == "idempotency_key_required"
    wrong = sandbox.session.post(
        sandbox.url + "/v1/charges",
        json=charge(),
        headers={"Authorization": "Bearer sk_wrong", "Idempotency-Key": key()},
        timeout=5,
    )
    assert wrong.status_code == 401
    assert sandbox.stats()["created"]["charge"] == 0


def test_malformed_amounts_are_400(sandbox):
    for amount in (0, -5, "12.50", 12.5, True):
        assert sandbox.post("/v1/charges", charge(amount=amount), key()).status_code == 400


def test_a_payout_to_a_valid_iban_succeeds(sandbox):
    body = {"amount": 5000, "currency": "EUR", "beneficiary": {"name": "Ada", "iban": GOOD_IBAN}}
    response = sandbox.post("/v1/payouts", body, key())
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded" and response.json()["id"].startswith("po_")
    assert response.json()["beneficiary"] == {"name": "Ada", "iban_last4": "3000"}


def test_a_payout_to_the_failing_test_iban_fails(sandbox):
    body = {"amount": 5000, "currency": "EUR", "beneficiary": {"name": "Ada", "iban": FAILING_IBAN}}
    response = sandbox.post("/v1/payouts", body, key())
    assert response.status_code == 402
    assert response.json()["status"] == "failed"
    assert response.json()["failure_code"] == "account_closed"


def test_a_payout_to_a_malformed_iban_is_422(sandbox):
    body = {"amount": 5000, "currency": "EUR", "beneficiary": {"name": "Ada", "iban": "DE00123"}}
    response = sandbox.post("/v1/payouts", body, key())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_iban"
    assert sandbox.stats()["created"]["payout"] == 0


def test_injected_errors_do_nothing_and_then_stop(sandbox):
    sandbox.fail_next(2, status=503)
    k = key()
    statuses = [sandbox.post("/v1/charges", charge(), k).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]
    assert sandbox.stats()["created"]["charge"] == 1


def test_an_injected_delay_happens_after_the_work(sandbox):
    sandbox.slow_next(1, delay=1.0)
    k = key()
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        sandbox.post("/v1/charges", charge(), k, timeout=0.3)
    assert time.monotonic() - started < 1.0
    # The charge happened although the client never saw the answer.
    assert sandbox.stats()["created"]["charge"] == 1
    assert sandbox.post("/v1/charges", charge(), k).headers["Idempotent-Replayed"] == "true"


def test_each_operation_sends_a_signed_webhook(sandbox, inbox):
    k = key()
    made = sandbox.post("/v1/charges", charge("tok_declined"), k).json()
    headers, body = inbox.next()
    webhooks.verify(WEBHOOK_SECRET, headers[webhooks.SIGNATURE_HEADER], body, now=time.time())
    event = json.loads(body)
    assert event["type"] == "charge.failed"
    assert event["reference"] == made["id"] and event["idempotency_key"] == k
    assert event["failure_code"] == "card_declined"
    assert (event["amount"], event["currency"]) == (1250, "EUR")
    assert event["event_id"].startswith("evt_") and event["occurred_at"]
    # A replay is not a new operation: no new webhook.
    sandbox.post("/v1/charges", charge("tok_declined"), k)
    sandbox.redeliver(made["id"])
    _, again = inbox.next()
    assert json.loads(again)["event_id"] == event["event_id"]
    assert inbox.received.empty()


def test_a_webhook_that_is_not_acknowledged_is_delivered_again(sandbox, inbox):
    inbox.status = 500
    try:
        sandbox.post(
            "/v1/payouts",
            {"amount": 1, "currency": "EUR", "beneficiary": {"name": "Ada", "iban": GOOD_IBAN}},
            key(),
        )
        first = json.loads(inbox.next()[1])
        inbox.status = 200
        second = json.loads(inbox.next(timeout=5)[1])
    finally:
        inbox.status = 200
    assert first["event_id"] == second["event_id"]
    assert first["type"] == "payout.succeeded"

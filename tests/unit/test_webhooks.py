"""Webhook signatures (shared.webhooks) and the gateway endpoint that checks them."""

import json
import time

import pytest

from shared import webhooks
from shared.errors import Unauthenticated
from tests.unit.helpers import gateway_app

SECRET = "whsec_unit"
BODY = b'{"event_id":"evt_1","type":"charge.succeeded"}'
NOW = 1_800_000_000


def test_a_signature_made_with_the_secret_verifies():
    header = webhooks.sign(SECRET, BODY, NOW)
    assert header.startswith(f"t={NOW},v1=")
    webhooks.verify(SECRET, header, BODY, now=NOW + 10)


def test_a_tampered_body_is_refused():
    header = webhooks.sign(SECRET, BODY, NOW)
    with pytest.raises(Unauthenticated) as refused:
        webhooks.verify(SECRET, header, BODY.replace(b"succeeded", b"failed"), now=NOW)
    assert refused.value.code == "invalid_signature"


def test_a_signature_made_with_another_secret_is_refused():
    header = webhooks.sign("whsec_someone_else", BODY, NOW)
    with pytest.raises(Unauthenticated):
        webhooks.verify(SECRET, header, BODY, now=NOW)


def test_a_stale_or_future_timestamp_is_refused_even_when_correctly_signed():
    header = webhooks.sign(SECRET, BODY, NOW)
    webhooks.verify(SECRET, header, BODY, now=NOW + 300)
    with pytest.raises(Unauthenticated):
        webhooks.verify(SECRET, header, BODY, now=NOW + 301)
    with pytest.raises(Unauthenticated):
        webhooks.verify(SECRET, header, BODY, now=NOW - 301)
    with pytest.raises(Unauthenticated):
        webhooks.verify(SECRET, header, BODY, now=NOW + 61, tolerance=60)


def test_the_timestamp_is_part_of_what_is_signed():
    digest = webhooks.sign(SECRET, BODY, NOW).split("v1=")[1]
    with pytest.raises(Unauthenticated):
        webhooks.verify(SECRET, f"t={NOW + 5},v1={digest}", BODY, now=NOW + 5)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=abc,v1=00",
        f"t={NOW}",
        "v1=" + "0" * 64,
        f"t={NOW},t={NOW},v1=" + "0" * 64,
        f"t={NOW},v1=é",
        f"t={NOW},v1=" + "0" * 2000,
        f"t=-{NOW},v1=" + "0" * 64,
    ],
)
def test_missing_or_malformed_headers_are_refused(header):
    with pytest.raises(Unauthenticated) as refused:
        webhooks.verify(SECRET, header, BODY, now=NOW)
    assert refused.value.code == "invalid_signature"


def test_any_of_several_v1_signatures_may_match_while_the_sender_rotates():
    old = webhooks.sign("whsec_old", BODY, NOW).split("v1=")[1]
    new = webhooks.sign(SECRET, BODY, NOW).split("v1=")[1]
    webhooks.verify(SECRET, f"t={NOW},v1={old},v1={new}", BODY, now=NOW)


def test_an_empty_secret_never_verifies():
    header = webhooks.sign(SECRET, BODY, NOW)
    with pytest.raises(Unauthenticated):
        webhooks.verify("", header, BODY, now=NOW)
    with pytest.raises(ValueError):
        webhooks.sign("", BODY, NOW)


# The gateway endpoint, with no broker behind it: every refusal happens before RPC.


@pytest.fixture
def client():
    return gateway_app(PAYMENTS_WEBHOOK_SECRET_SANDBOX=f"whsec_next,{SECRET}").test_client()


def _post(client, body: bytes, header: str | None, provider="sandbox"):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[webhooks.SIGNATURE_HEADER] = header
    return client.post(f"/v1/webhooks/payments/{provider}", data=body, headers=headers)


def test_a_bad_signature_is_401_problem_json(client):
    header = webhooks.sign("whsec_forger", BODY, int(time.time()))
    response = _post(client, BODY, header)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "invalid_signature"


def test_a_missing_signature_is_401(client):
    response = _post(client, BODY, None)
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_signature"


def test_a_replayed_old_delivery_is_401(client):
    response = _post(client, BODY, webhooks.sign(SECRET, BODY, int(time.time()) - 3600))
    assert response.status_code == 401


def test_an_unknown_provider_is_404(client):
    header = webhooks.sign(SECRET, BODY, int(time.time()))
    assert _post(client, BODY, header, provider="acme").status_code == 404
    assert _post(client, BODY, header, provider="Sandbox").status_code == 404


def test_a_valid_signature_gets_through_to_payments(client):
    # Verified, so the gateway tries to reach payments: with no broker, 503
    # (the provider will deliver again), never 401.
    response = _post(client, BODY, webhooks.sign(SECRET, BODY, int(time.time())))
    assert response.status_code == 503
    assert response.get_json()["code"] == "broker_unavailable"


def test_an_older_secret_still_verifies_during_rotation(client):
    response = _post(client, BODY, webhooks.sign("whsec_next", BODY, int(time.time())))
    assert response.status_code == 503


def test_a_signed_body_that_is_not_a_json_object_is_400(client):
    body = json.dumps(["not", "an", "object"]).encode()
    response = _post(client, body, webhooks.sign(SECRET, body, int(time.time())))
    assert response.status_code == 400
    assert response.get_json()["code"] == "malformed_json"


def test_the_endpoint_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "post" in paths["/v1/webhooks/payments/{provider}"]


def test_a_signed_body_nested_too_deeply_is_400_not_a_crash(client):
    deep = b"[" * 30_000 + b"]" * 30_000
    response = _post(client, deep, webhooks.sign(SECRET, deep, int(time.time())))
    assert response.status_code == 400
    assert response.get_json()["code"] == "malformed_json"

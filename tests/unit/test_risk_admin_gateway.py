"""/v1/admin/risk in the gateway, with the risk service faked (no broker)."""

import pytest

from services.risk import schemas as risk_schemas
from shared.errors import Conflict, InvalidInput, NotFound
from shared.schemas import load
from tests.unit.helpers import FakeServices, gateway_app

ADMIN_ID = "0b7e3c1a-5d2f-4a8e-9c61-3f2a1b0c9d8e"
CUSTOMER_ID = "2f1c1a52-8d7e-4c41-9a3e-2b1f0c6f7a10"
ACCOUNT_ID = "5a0d7f3e-2c1b-4e9a-8d6f-1b2c3d4e5f60"
REVIEW_ID = "9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
TRANSFER_ID = "7d4b8f0e-1111-4c41-9a3e-2b1f0c6f7a10"

AS_ADMIN = {"X-Test-User": ADMIN_ID, "X-Test-Roles": "admin"}
AS_CUSTOMER = {"X-Test-User": CUSTOMER_ID, "X-Test-Roles": "customer"}


def review(amount=1234, currency="EUR", **changes) -> dict:
    return {
        "review_id": REVIEW_ID,
        "transfer_id": TRANSFER_ID,
        "kind": "payout",
        "owner_id": CUSTOMER_ID,
        "account_id": ACCOUNT_ID,
        "amount": amount,
        "currency": currency,
        "score": 55,
        "reasons": ["new_beneficiary", "large_amount"],
        "signals": {"account_age_days": 2},
        "status": "pending",
        "created_at": "2026-11-10T12:00:00+00:00",
        "expires_at": "2026-11-11T12:00:00+00:00",
        "decided_at": None,
        "decided_by": None,
        "note": None,
        **changes,
    }


def assessment(amount=1234, currency="EUR") -> dict:
    return {
        "transfer_id": TRANSFER_ID,
        "kind": "payout",
        "owner_id": CUSTOMER_ID,
        "account_id": ACCOUNT_ID,
        "beneficiary": "iban:DE89370400440532013000",
        "amount": amount,
        "currency": currency,
        "decision": "review",
        "final_decision": None,
        "score": 55,
        "reasons": ["new_beneficiary"],
        "signals": {"account_age_days": 2},
        "tier": "standard",
        "rules_version": 3,
        "assessed_at": "2026-11-10T12:00:00+00:00",
        "review_id": REVIEW_ID,
    }


RULES = {
    "version": 3,
    "created_at": "2026-11-01T09:00:00+00:00",
    "created_by": ADMIN_ID,
    "comment": "lower the payout limit",
    "rules": {"tiers": {"standard": {"max_payout": {"EUR": "1000.00", "JPY": "150000"}}}},
}

CUSTOMER = {
    "user_id": CUSTOMER_ID,
    "tier": "standard",
    "failed_logins": 2,
    "failed_logins_window_hours": 24,
    "last_failed_login_at": "2026-11-10T11:00:00+00:00",
    "elevated": False,
}


class FakeRisk:
    """The risk service's RPC contract; keyword-only, as the gateway must call it."""

    def __init__(self):
        self.calls = []
        self.error = None

    def _called(self, method, **kwargs):
        self.calls.append((method, kwargs))
        if self.error:
            raise self.error

    def list_reviews(self, *, status="pending", limit=50, cursor=None):
        self._called("list_reviews", status=status, limit=limit, cursor=cursor)
        return {"items": [review(1234, "EUR"), review(1234, "JPY")], "next_cursor": "c2"}

    def get_review(self, *, review_id):
        self._called("get_review", review_id=review_id)
        return review(1234, "JPY")

    def decide_review(self, *, review_id, decision, decided_by, note=None):
        self._called(
            "decide_review",
            review_id=review_id,
            decision=decision,
            decided_by=decided_by,
            note=note,
        )
        return review(
            status="approved",
            decided_at="2026-11-10T13:00:00+00:00",
            decided_by=decided_by,
            note=note,
        )

    def list_assessments(
        self, *, account_id=None, owner_id=None, decision=None, limit=50, cursor=None
    ):
        self._called(
            "list_assessments",
            account_id=account_id,
            owner_id=owner_id,
            decision=decision,
            limit=limit,
            cursor=cursor,
        )
        return {"items": [assessment(1234, "JPY")], "next_cursor": None}

    def get_assessment(self, *, transfer_id):
        self._called("get_assessment", transfer_id=transfer_id)
        return assessment(1234, "EUR")

    def get_rules(self, *, version=None):
        self._called("get_rules", version=version)
        return RULES

    def list_rule_versions(self, *, limit=50):
        self._called("list_rule_versions", limit=limit)
        return {"items": [{key: RULES[key] for key in ("version", "created_at", "created_by")}]}

    def put_rules(self, *, rules, changed_by, comment=None):
        self._called("put_rules", rules=rules, changed_by=changed_by, comment=comment)
        return {**RULES, "version": 4, "created_by": changed_by, "comment": comment, "rules": rules}

    def get_customer(self, *, user_id):
        self._called("get_customer", user_id=user_id)
        return CUSTOMER

    def set_customer_tier(self, *, user_id, tier, changed_by):
        self._called("set_customer_tier", user_id=user_id, tier=tier, changed_by=changed_by)
        return {**CUSTOMER, "tier": tier, "elevated": True}


@pytest.fixture
def fake():
    return FakeServices(risk=FakeRisk())


@pytest.fixture
def client(fake):
    return gateway_app(rpc=fake, test_principal=True).test_client()


# Every endpoint, with a body that would be valid for an admin.
ENDPOINTS = [
    ("GET", "/v1/admin/risk/reviews", None),
    ("GET", f"/v1/admin/risk/reviews/{REVIEW_ID}", None),
    ("POST", f"/v1/admin/risk/reviews/{REVIEW_ID}/decision", {"decision": "approve"}),
    ("GET", "/v1/admin/risk/assessments", None),
    ("GET", f"/v1/admin/risk/assessments/{TRANSFER_ID}", None),
    ("GET", "/v1/admin/risk/rules", None),
    ("PUT", "/v1/admin/risk/rules", {"rules": {}}),
    ("GET", "/v1/admin/risk/rules/versions", None),
    ("GET", f"/v1/admin/risk/customers/{CUSTOMER_ID}", None),
    ("PUT", f"/v1/admin/risk/customers/{CUSTOMER_ID}", {"tier": "elevated"}),
]
_ids = [f"{method} {path}" for method, path, _ in ENDPOINTS]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=_ids)
def test_every_endpoint_needs_a_token(client, fake, method, path, body):
    response = client.open(path, method=method, json=body)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert fake.risk.calls == []


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=_ids)
def test_every_endpoint_refuses_a_customer_with_403(client, fake, method, path, body):
    response = client.open(path, method=method, json=body, headers=AS_CUSTOMER)
    assert response.status_code == 403
    assert response.get_json()["code"] == "forbidden"
    assert fake.risk.calls == []


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=_ids)
def test_every_endpoint_answers_an_admin(client, method, path, body):
    assert client.open(path, method=method, json=body, headers=AS_ADMIN).status_code == 200


def test_the_role_is_checked_before_the_request_is_validated(client, fake):
    bad_query = client.get("/v1/admin/risk/reviews?status=bogus", headers=AS_CUSTOMER)
    bad_body = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision", json={}, headers=AS_CUSTOMER
    )
    assert (bad_query.status_code, bad_body.status_code) == (403, 403)


# reviews ---------------------------------------------------------------------------


def test_reviews_show_amounts_in_each_currencys_digits(client, fake):
    response = client.get("/v1/admin/risk/reviews", headers=AS_ADMIN)
    assert response.status_code == 200
    body = response.get_json()
    assert [(item["amount"], item["currency"]) for item in body["items"]] == [
        ("12.34", "EUR"),
        ("1234", "JPY"),
    ]
    assert body["next_cursor"] == "c2"
    assert body["items"][0] == {**review(), "amount": "12.34"}


def test_the_review_queue_defaults_to_pending_reviews(client, fake):
    client.get("/v1/admin/risk/reviews", headers=AS_ADMIN)
    assert fake.risk.calls == [("list_reviews", {"status": "pending", "limit": 50, "cursor": None})]


@pytest.mark.parametrize(
    "status", ["pending", "approved", "rejected", "expired", "withdrawn", "all"]
)
def test_reviews_can_be_listed_by_status(client, fake, status):
    response = client.get(
        f"/v1/admin/risk/reviews?status={status}&limit=10&cursor=c1", headers=AS_ADMIN
    )
    assert response.status_code == 200
    assert fake.risk.calls == [("list_reviews", {"status": status, "limit": 10, "cursor": "c1"})]


@pytest.mark.parametrize("query", ["status=bogus", "status=", "limit=0", "limit=201", "limit=x"])
def test_a_bad_review_query_is_422(client, fake, query):
    response = client.get(f"/v1/admin/risk/reviews?{query}", headers=AS_ADMIN)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert fake.risk.calls == []


def test_one_review(client, fake):
    response = client.get(f"/v1/admin/risk/reviews/{REVIEW_ID}", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.get_json()["amount"] == "1234"  # JPY has no minor digits
    assert fake.risk.calls == [("get_review", {"review_id": REVIEW_ID})]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/risk/reviews/not-a-uuid",
        "/v1/admin/risk/assessments/not-a-uuid",
        "/v1/admin/risk/customers/not-a-uuid",
    ],
)
def test_a_malformed_id_is_404_like_a_malformed_transfer_id(client, fake, path):
    response = client.get(path, headers=AS_ADMIN)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert fake.risk.calls == []


def test_the_decision_is_recorded_as_the_admin_from_the_token(client, fake):
    response = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision",
        json={"decision": "approve", "note": "known customer"},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["decided_by"], body["amount"]) == ("approved", ADMIN_ID, "12.34")
    assert fake.risk.calls == [
        (
            "decide_review",
            {
                "review_id": REVIEW_ID,
                "decision": "approve",
                "decided_by": ADMIN_ID,
                "note": "known customer",
            },
        )
    ]


def test_a_decision_without_a_note(client, fake):
    response = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision",
        json={"decision": "reject"},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200
    [(_, kwargs)] = fake.risk.calls
    assert (kwargs["decision"], kwargs["note"]) == ("reject", None)


def test_a_note_of_500_characters_is_accepted(client):
    response = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision",
        json={"decision": "reject", "note": "x" * 500},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "decision"),
        ({"note": "no decision"}, "decision"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": None}, "decision"),
        ({"decision": "approve", "note": "x" * 501}, "note"),
        ({"decision": "approve", "decided_by": CUSTOMER_ID}, "decided_by"),
        ({"decision": "approve", "extra": 1}, "extra"),
    ],
)
def test_a_bad_decision_body_is_422_naming_the_field(client, fake, body, field):
    response = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision", json=body, headers=AS_ADMIN
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert fake.risk.calls == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotFound("review_not_found", "No such review."), 404, "review_not_found"),
        (Conflict("review_already_decided", "Already approved."), 409, "review_already_decided"),
        (Conflict("review_expired", "The review expired."), 409, "review_expired"),
    ],
)
def test_the_risk_services_refusals_become_problem_json(client, fake, error, status, code):
    fake.risk.error = error
    response = client.post(
        f"/v1/admin/risk/reviews/{REVIEW_ID}/decision",
        json={"decision": "approve"},
        headers=AS_ADMIN,
    )
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == code


def test_an_unknown_review_is_404(client, fake):
    fake.risk.error = NotFound("review_not_found", "No such review.")
    response = client.get(f"/v1/admin/risk/reviews/{REVIEW_ID}", headers=AS_ADMIN)
    assert response.status_code == 404
    assert response.get_json()["code"] == "review_not_found"


# assessments ------------------------------------------------------------------------


def test_assessments_filter_by_account_customer_and_decision(client, fake):
    response = client.get(
        f"/v1/admin/risk/assessments?account_id={ACCOUNT_ID}&customer_id={CUSTOMER_ID}"
        "&decision=review&limit=5&cursor=c1",
        headers=AS_ADMIN,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["next_cursor"] is None
    [item] = body["items"]
    assert (item["amount"], item["currency"], item["decision"]) == ("1234", "JPY", "review")
    assert fake.risk.calls == [
        (
            "list_assessments",
            {
                "account_id": ACCOUNT_ID,
                "owner_id": CUSTOMER_ID,
                "decision": "review",
                "limit": 5,
                "cursor": "c1",
            },
        )
    ]


def test_assessments_unfiltered(client, fake):
    assert client.get("/v1/admin/risk/assessments", headers=AS_ADMIN).status_code == 200
    assert fake.risk.calls == [
        (
            "list_assessments",
            {"account_id": None, "owner_id": None, "decision": None, "limit": 50, "cursor": None},
        )
    ]


@pytest.mark.parametrize(
    "query", ["decision=maybe", "account_id=nope", "customer_id=nope", "limit=0", "limit=500"]
)
def test_a_bad_assessment_query_is_422(client, fake, query):
    response = client.get(f"/v1/admin/risk/assessments?{query}", headers=AS_ADMIN)
    assert response.status_code == 422
    assert fake.risk.calls == []


def test_one_assessment(client, fake):
    response = client.get(f"/v1/admin/risk/assessments/{TRANSFER_ID}", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.get_json() == {**assessment(), "amount": "12.34"}
    assert fake.risk.calls == [("get_assessment", {"transfer_id": TRANSFER_ID})]


# rules --------------------------------------------------------------------------------


def test_the_current_rules_pass_through_unchanged(client, fake):
    response = client.get("/v1/admin/risk/rules", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.get_json() == RULES
    assert fake.risk.calls == [("get_rules", {"version": None})]


def test_an_earlier_rules_version(client, fake):
    assert client.get("/v1/admin/risk/rules?version=2", headers=AS_ADMIN).status_code == 200
    assert fake.risk.calls == [("get_rules", {"version": 2})]
    assert client.get("/v1/admin/risk/rules?version=0", headers=AS_ADMIN).status_code == 422


def test_new_rules_are_recorded_as_the_admin_from_the_token(client, fake):
    rules = {"tiers": {"standard": {"max_payout": {"EUR": "500.00"}}}}
    response = client.put(
        "/v1/admin/risk/rules", json={"rules": rules, "comment": "tighter"}, headers=AS_ADMIN
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["version"], body["created_by"], body["rules"]) == (4, ADMIN_ID, rules)
    assert fake.risk.calls == [
        ("put_rules", {"rules": rules, "changed_by": ADMIN_ID, "comment": "tighter"})
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "rules"),
        ({"rules": None}, "rules"),
        ({"rules": [1, 2]}, "rules"),
        ({"rules": "strict"}, "rules"),
        ({"rules": {}, "comment": "x" * 501}, "comment"),
        ({"rules": {}, "changed_by": CUSTOMER_ID}, "changed_by"),
    ],
)
def test_a_bad_rules_body_is_422(client, fake, body, field):
    response = client.put("/v1/admin/risk/rules", json=body, headers=AS_ADMIN)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert fake.risk.calls == []


def test_rules_the_risk_service_rejects_are_422_with_its_field_errors(client, fake):
    errors = {"rules.tiers.standard.max_payout.EUR": ["Must be a decimal string."]}
    fake.risk.error = InvalidInput("invalid_rules", "The rules are not valid.", errors)
    response = client.put("/v1/admin/risk/rules", json={"rules": {"x": 1}}, headers=AS_ADMIN)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert (body["code"], body["errors"]) == ("invalid_rules", errors)


def test_rule_versions(client, fake):
    response = client.get("/v1/admin/risk/rules/versions?limit=3", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.get_json()["items"][0]["version"] == 3
    assert fake.risk.calls == [("list_rule_versions", {"limit": 3})]
    assert client.get("/v1/admin/risk/rules/versions?limit=0", headers=AS_ADMIN).status_code == 422


# customers ------------------------------------------------------------------------------


def test_a_customers_risk_profile(client, fake):
    response = client.get(f"/v1/admin/risk/customers/{CUSTOMER_ID}", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.get_json() == CUSTOMER
    assert fake.risk.calls == [("get_customer", {"user_id": CUSTOMER_ID})]


def test_a_tier_change_is_recorded_as_the_admin_from_the_token(client, fake):
    response = client.put(
        f"/v1/admin/risk/customers/{CUSTOMER_ID}", json={"tier": "elevated"}, headers=AS_ADMIN
    )
    assert response.status_code == 200
    assert response.get_json()["tier"] == "elevated"
    assert fake.risk.calls == [
        ("set_customer_tier", {"user_id": CUSTOMER_ID, "tier": "elevated", "changed_by": ADMIN_ID})
    ]


@pytest.mark.parametrize("body", [{}, {"tier": ""}, {"tier": 3}, {"tier": "vip", "extra": True}])
def test_a_bad_tier_body_is_422(client, fake, body):
    response = client.put(f"/v1/admin/risk/customers/{CUSTOMER_ID}", json=body, headers=AS_ADMIN)
    assert response.status_code == 422
    assert fake.risk.calls == []


def test_an_unknown_tier_from_the_risk_service_is_422(client, fake):
    fake.risk.error = InvalidInput("unknown_tier", "No such tier.", {"tier": ["Unknown tier."]})
    response = client.put(
        f"/v1/admin/risk/customers/{CUSTOMER_ID}", json={"tier": "gold"}, headers=AS_ADMIN
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"tier": ["Unknown tier."]}


# openapi -------------------------------------------------------------------------------


def test_the_endpoints_are_in_the_openapi_document_behind_bearer_auth(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    expected = {
        "/v1/admin/risk/reviews": {"get"},
        "/v1/admin/risk/reviews/{review_id}": {"get"},
        "/v1/admin/risk/reviews/{review_id}/decision": {"post"},
        "/v1/admin/risk/assessments": {"get"},
        "/v1/admin/risk/assessments/{transfer_id}": {"get"},
        "/v1/admin/risk/rules": {"get", "put"},
        "/v1/admin/risk/rules/versions": {"get"},
        "/v1/admin/risk/customers/{user_id}": {"get", "put"},
    }
    for path, methods in expected.items():
        assert path in paths
        for method in methods:
            operation = paths[path][method]
            assert operation["security"] == [{"bearerAuth": []}]
            assert "200" in operation["responses"]


def test_integers_past_64_bits_are_refused_at_the_edge(client, fake):
    response = client.get("/v1/admin/risk/rules?version=9223372036854775808", headers=AS_ADMIN)
    assert response.status_code == 422
    assert fake.risk.calls == []


def test_risk_refuses_cursors_and_versions_past_64_bits():
    for schema, args in (
        (risk_schemas.ListReviewsArgs, {"cursor": 9999999999999999999999999}),
        (risk_schemas.ListAssessmentsArgs, {"cursor": 2**63}),
    ):
        with pytest.raises(InvalidInput):
            load(schema, args)

"""What /openapi.json says of errors and inputs, and that the gateway does it
(services faked: what reaches them is recorded)."""

import json

import pytest

from gateway import problems
from tests.unit.helpers import FakeServices, gateway_app

USER_ID = "2f1c1a52-8d7e-4c41-9a3e-2b1f0c6f7a10"
ACCOUNT_ID = "5a0d7f3e-2c1b-4e9a-8d6f-1b2c3d4e5f60"
OTHER_ACCOUNT_ID = "7d4b8f0e-1111-4c41-9a3e-2b1f0c6f7a10"
AS_CUSTOMER = {"X-Test-User": USER_ID, "Idempotency-Key": "k-1"}
AS_ADMIN = {"X-Test-User": USER_ID, "X-Test-Roles": "admin"}


class Recorder:
    """A service that records each call and answers `answer`."""

    def __init__(self, answer):
        self.calls = []
        self._answer = answer

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            return self._answer

        return call


@pytest.fixture
def services():
    return FakeServices(
        transactions=Recorder({"transfer_id": OTHER_ACCOUNT_ID, "status": "pending"}),
        notifications=Recorder({"email": True, "sms": False, "push": False}),
        auth=Recorder({"user_id": USER_ID, "email": "ada@example.com"}),
        risk=Recorder({}),
        accounts=Recorder({}),
    )


@pytest.fixture
def client(services):
    return gateway_app(rpc=services, test_principal=True).test_client()


@pytest.fixture(scope="module")
def document():
    return gateway_app().test_client().get("/openapi.json").get_json()


def _resolve(document, item):
    while "$ref" in item:
        _, _, kind, name = item["$ref"].split("/")
        item = document["components"][kind][name]
    return item


# errors in the document -----------------------------------------------------------


def test_every_error_response_is_a_problem_at_problem_json(document):
    errors = [
        (path, method, status, _resolve(document, response))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method in ("get", "put", "post", "delete", "patch")
        for status, response in operation["responses"].items()
        if status == "default" or int(status) >= 400
    ]
    assert len(errors) > len(document["paths"])  # a default each, and the 422s
    for path, method, status, response in errors:
        assert response["content"] == {
            problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
        }, (path, method, status)
    assert "Error" not in document["components"]["schemas"]  # flask-smorest's, never sent


def test_the_problem_schema_has_the_fields_problems_are_written_with(document, client):
    schema = document["components"]["schemas"]["Problem"]
    answer = client.post("/v1/transfers", json={"amount": 12}, headers=AS_CUSTOMER)
    body = answer.get_json()
    assert answer.mimetype == problems.MEDIA_TYPE
    assert set(body) == set(schema["properties"])  # errors included: a validation problem
    assert set(schema["required"]) == set(body) - {"errors"}
    assert schema["additionalProperties"] is False


def test_a_schema_wide_rule_is_shown_in_the_document(document):
    assert document["components"]["schemas"]["PreferencesUpdate"]["minProperties"] == 1


def test_the_document_shows_the_shape_of_amounts_ibans_and_names(document):
    schemas = document["components"]["schemas"]
    amount = schemas["TransferRequest"]["properties"]["amount"]
    assert amount["pattern"] == r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,3})?$"
    assert "JPY" in amount["description"]
    assert schemas["PayoutRequest"]["properties"]["beneficiary"] == {
        "$ref": "#/components/schemas/PayoutBeneficiary"
    }
    iban = schemas["PayoutBeneficiary"]["properties"]["iban"]
    assert (iban["minLength"], iban["maxLength"]) == (15, 42)
    assert "pattern" in iban
    assert "pattern" in schemas["RegisterRequest"]["properties"]["full_name"]


# refused at the edge: 422, and the service never asked ------------------------------


def _transfer(amount, currency="EUR"):
    return {
        "from_account_id": ACCOUNT_ID,
        "to_account_id": OTHER_ACCOUNT_ID,
        "amount": amount,
        "currency": currency,
    }


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("", "EUR"),
        ("0", "EUR"),
        ("0.00", "EUR"),
        ("-1.00", "EUR"),
        ("abc", "EUR"),
        ("1e3", "EUR"),
        (" 12.34", "EUR"),
        ("12.34\n", "EUR"),  # `$` in re.match would take it
        ("12.345", "EUR"),
        ("1.5", "JPY"),
        ("1.0", "JPY"),
        ("1.2345", "KWD"),
        (12, "EUR"),
        (None, "EUR"),
    ],
)
def test_amounts_that_are_not_positive_decimals_in_the_currencys_digits_are_422(
    client, services, amount, currency
):
    response = client.post("/v1/transfers", json=_transfer(amount, currency), headers=AS_CUSTOMER)
    assert response.status_code == 422, response.get_json()
    assert "amount" in response.get_json()["errors"]
    assert services.transactions.calls == []


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("12.34", "EUR", 1234), ("1234", "JPY", 1234), ("1.5", "KWD", 1500)],
)
def test_amounts_in_the_currencys_digits_go_through(client, services, amount, currency, minor):
    response = client.post("/v1/transfers", json=_transfer(amount, currency), headers=AS_CUSTOMER)
    assert response.status_code == 202
    [(_, (_, _, transfer, notify), _)] = services.transactions.calls
    assert (transfer["amount"], transfer["currency"]) == (minor, currency)
    assert notify is None  # it does not wait: its outcome is routed to no gateway process


def _payout(iban, name="Landlord"):
    return {
        "from_account_id": ACCOUNT_ID,
        "amount": "10.00",
        "currency": "EUR",
        "beneficiary": {"name": name, "iban": iban},
    }


@pytest.mark.parametrize(
    ("iban", "name"),
    [
        ("", "Landlord"),
        ("   ", "Landlord"),
        ("DE89", "Landlord"),
        ("DE89370400440532013001", "Landlord"),  # check digits
        ("89DE370400440532013000", "Landlord"),
        ("DE89370400440532013000", "   "),
    ],
)
def test_an_empty_or_malformed_iban_or_a_blank_name_is_422(client, services, iban, name):
    response = client.post("/v1/payouts", json=_payout(iban, name), headers=AS_CUSTOMER)
    assert response.status_code == 422
    assert "beneficiary" in response.get_json()["errors"]
    assert services.transactions.calls == []


def test_an_iban_written_in_groups_is_read_as_the_bank_writes_it(client, services):
    response = client.post(
        "/v1/payouts", json=_payout("de89 3704 0044 0532 0130 00"), headers=AS_CUSTOMER
    )
    assert response.status_code == 202
    [(_, (_, _, transfer, _), _)] = services.transactions.calls
    assert transfer["beneficiary"]["iban"] == "DE89370400440532013000"


@pytest.mark.parametrize("full_name", ["", " ", "\t\n  "])
def test_a_blank_full_name_is_422(client, services, full_name):
    response = client.post(
        "/v1/auth/register",
        json={
            "email": "ada@example.com",
            "password": "correct horse battery",
            "full_name": full_name,
        },
    )
    assert response.status_code == 422
    assert "full_name" in response.get_json()["errors"]
    assert services.auth.calls == []


def test_a_password_of_white_space_is_422(client, services):
    response = client.post(
        "/v1/auth/register",
        json={"email": "ada@example.com", "password": " " * 16, "full_name": "Ada"},
    )
    assert response.status_code == 422
    assert services.auth.calls == []


def test_a_blank_card_token_is_422(client, services):
    body = {
        "account_id": ACCOUNT_ID,
        "amount": "10.00",
        "currency": "EUR",
        "source": {"type": "card", "token": "  "},
    }
    response = client.post("/v1/deposits", json=body, headers=AS_CUSTOMER)
    assert response.status_code == 422
    assert services.transactions.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"push": True, "push_token": None},
        {"sms": True, "phone": None},
        {"push_token": "   "},
        {"phone": "+4915112345678\n"},
    ],
)
def test_preferences_that_cannot_hold_are_422(client, services, body):
    response = client.put("/v1/notifications/preferences", json=body, headers=AS_CUSTOMER)
    assert response.status_code == 422
    assert services.notifications.calls == []


@pytest.mark.parametrize("body", [None, {}])
def test_a_preferences_put_with_nothing_to_change_is_422_and_changes_nothing(
    client, services, body
):
    response = client.put(
        "/v1/notifications/preferences",
        headers=AS_CUSTOMER,
        **({} if body is None else {"data": json.dumps(body), "content_type": "application/json"}),
    )
    assert response.status_code == 422
    assert response.mimetype == problems.MEDIA_TYPE
    assert list(response.get_json()["errors"]) == ["body"]
    assert services.notifications.calls == []


def test_turning_push_on_is_left_to_the_service_which_knows_the_kept_token(client, services):
    response = client.put("/v1/notifications/preferences", json={"push": True}, headers=AS_CUSTOMER)
    assert response.status_code == 200
    assert services.notifications.calls == [("set_preferences", (USER_ID, {"push": True}), {})]


@pytest.mark.parametrize("version", ["0", str(2**31), str(2**63)])
def test_a_rules_version_past_its_column_is_422(client, services, version):
    response = client.get(f"/v1/admin/risk/rules?version={version}", headers=AS_ADMIN)
    assert response.status_code == 422
    assert services.risk.calls == []


@pytest.mark.parametrize("day", ["1969-12-31", "0030-05-23", "9999-12-31"])
def test_a_report_day_with_no_report_is_422(client, services, day):
    response = client.get(f"/v1/admin/reconciliation/report?day={day}", headers=AS_ADMIN)
    assert response.status_code == 422
    assert services.accounts.calls == []


def test_a_tier_is_named_as_the_risk_service_names_tiers(client, services):
    for tier in ("   ", "Gold", "x" * 33, "gold\n"):
        response = client.put(
            f"/v1/admin/risk/customers/{USER_ID}", json={"tier": tier}, headers=AS_ADMIN
        )
        assert response.status_code == 422, tier
    assert services.risk.calls == []


@pytest.mark.parametrize(
    ("method", "path", "body", "errors"),
    [
        (
            "POST",
            f"/v1/admin/reconciliation/discrepancies/{USER_ID}/resolve",
            {"note": "settled\u0000"},
            {"note": ["Must not contain the NUL character (\\u0000)."]},
        ),
        (
            "POST",
            "/v1/payouts",
            {**_payout("DE89370400440532013000"), "beneficiary": {"name": "L\u0000", "iban": "x"}},
            {"beneficiary": {"name": ["Must not contain the NUL character (\\u0000)."]}},
        ),
        (
            "GET",
            "/v1/transfers?cursor=12%0034",
            None,
            {"cursor": ["Must not contain the NUL character (\\u0000)."]},
        ),
    ],
)
def test_a_nul_character_postgresql_cannot_store_is_422(
    client, services, method, path, body, errors
):
    headers = AS_ADMIN if "/admin/" in path else AS_CUSTOMER
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["errors"] == errors
    assert services.transactions.calls == services.accounts.calls == []


@pytest.mark.parametrize("prefer", ["wait=\u00b2", "wait=" + "9" * 5000, "wait=x, respond-async"])
def test_a_wait_preference_that_is_no_number_is_ignored(client, services, prefer):
    response = client.post(
        "/v1/transfers", json=_transfer("1.00"), headers={**AS_CUSTOMER, "Prefer": prefer}
    )
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers


@pytest.mark.parametrize("full", [0, 1, 1.0, "true"])
def test_a_reconciliation_run_is_full_or_not_by_a_json_boolean_only(client, services, full):
    response = client.post("/v1/admin/reconciliation/runs", json={"full": full}, headers=AS_ADMIN)
    assert response.status_code == 422
    assert services.accounts.calls == []


def test_a_reconciliation_run_needs_no_body(client, services, document):
    operation = document["paths"]["/v1/admin/reconciliation/runs"]["post"]
    assert operation["requestBody"]["required"] is False
    services.accounts._answer = {"run_id": USER_ID, "status": "running"}
    response = client.post("/v1/admin/reconciliation/runs", headers=AS_ADMIN)
    assert response.status_code == 202
    assert services.accounts.calls == [("start_reconciliation", (), {"full": False})]

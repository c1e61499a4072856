"""Small HTTP steps the end-to-end tests share."""

import time
import uuid

import pytest

from shared.rpc import cluster_rpc

PASSWORD = "correct horse battery staple"


def register(api, email=None, password=PASSWORD):
    email = email or f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    response = api.post(
        "/v1/auth/register", json={"email": email, "password": password, "full_name": "E2E User"}
    )
    assert response.status_code == 201, response.text
    return response.json() | {"password": password}


def login(api, user):
    response = api.post(
        "/v1/auth/login", json={"email": user["email"], "password": user["password"]}
    )
    assert response.status_code == 200, response.text
    return response.json()


def signed_up(api):
    """A registered, logged-in user: (user, tokens)."""
    user = register(api)
    return user, login(api, user)


def assert_problem(response, status, code=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "code", "correlation_id"} <= set(body)
    assert body["status"] == status
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    if code:
        assert body["code"] == code, body
    return body


def make_admin(api):
    """A registered user granted the admin role, and their access token.

    Roles are granted by operators over RPC, never over HTTP; a token
    carries the roles of its login."""
    user = register(api)
    with cluster_rpc({"AMQP_URI": api.env["AMQP_URI"]}, timeout=10) as rpc:
        rpc.auth.grant_role(user["user_id"], "admin")
    return user, login(api, user)["access_token"]


FAILING_IBAN = "DE94370400440532010000"  # the sandbox refuses payouts to it
GOOD_IBAN = "DE89370400440532013000"


class Customer:
    def __init__(self, api, user=None, token=None):
        """A new customer, signed up and logged in; or an existing user and token."""
        self.api = api
        if user is None:
            user, tokens = signed_up(api)
            token = tokens["access_token"]
        self.user, self.token = user, token

    def open(self, currency="EUR"):
        response = self.api.post("/v1/accounts", token=self.token, json={"currency": currency})
        assert response.status_code == 201, response.text
        return response.json()["account_id"]

    def post(self, path, body, key=None, headers=None):
        return self.api.post(
            path,
            token=self.token,
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4()), **(headers or {})},
        )

    def start(self, path, body, key=None):
        response = self.post(path, body, key)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        return response.json()["transfer_id"]

    def deposit(self, account_id, amount, token="tok_ok"):
        return self.start(
            "/v1/deposits",
            {
                "account_id": account_id,
                "amount": amount,
                "currency": "EUR",
                "source": {"type": "card", "token": token},
            },
        )

    def transfer(self, from_id, to_id, amount, key=None):
        return self.start(
            "/v1/transfers",
            {
                "from_account_id": from_id,
                "to_account_id": to_id,
                "amount": amount,
                "currency": "EUR",
            },
            key,
        )

    def payout(self, from_id, amount, iban=GOOD_IBAN):
        return self.start(
            "/v1/payouts",
            {
                "from_account_id": from_id,
                "amount": amount,
                "currency": "EUR",
                "beneficiary": {"name": "Landlord", "iban": iban},
            },
        )

    def transfer_view(self, transfer_id):
        response = self.api.get(f"/v1/transfers/{transfer_id}", token=self.token)
        assert response.status_code == 200, response.text
        return response.json()

    def settled(self, transfer_id, timeout=45.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.transfer_view(transfer_id)
            if view["status"] != "pending":
                return view
            time.sleep(0.1)
        pytest.fail(f"transfer {transfer_id} still pending: {view}")

    def account(self, account_id):
        return self.api.get(f"/v1/accounts/{account_id}", token=self.token).json()

    def funded(self, amount="100.00"):
        account_id = self.open()
        assert self.settled(self.deposit(account_id, amount))["status"] == "completed"
        return account_id

"""Small HTTP steps the end-to-end tests share."""

import time
import uuid
from contextlib import closing
from decimal import Decimal

import psycopg2
import pytest
from sqlalchemy.engine import make_url

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


def accounts_sql(env, statement, params=()):
    """Rows of a query on the accounts database of env (the ledger)."""
    url = make_url(env["ACCOUNTS_DATABASE_URL"]).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    with closing(connection), connection, connection.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def history_total(customer, account_id) -> Decimal:
    """The sum of every amount in an account's history, page by page."""
    total, cursor = Decimal(0), None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = customer.api.get(
            f"/v1/accounts/{account_id}/transactions", token=customer.token, params=params
        ).json()
        total += sum(Decimal(item["amount"]) for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


def ledger_violations(env, owners: dict, opening: dict, views: dict) -> list[str]:
    """What is wrong with the ledger once no transfer is pending, in words.

    owners: each customer account id and a Customer who owns it; opening:
    each one's balance before `views` (transfer id -> its view, or None for
    one the ledger must not know) began."""
    found = []
    sums = accounts_sql(
        env, "SELECT currency, sum(balance), sum(held) FROM balances GROUP BY currency"
    )
    # Clearing and provider accounts included: money is conserved per currency.
    found += [f"{cur} ledger sums to {total}, not 0" for cur, total, _ in sums if total != 0]
    found += [f"{cur}: {held} minor units still held" for cur, _, held in sums if held != 0]
    active = accounts_sql(env, "SELECT transfer_id FROM holds WHERE status = 'active'")
    found += [f"hold of transfer {transfer_id} still active" for (transfer_id,) in active]
    overdrawn = accounts_sql(
        env, "SELECT account_id, balance FROM balances WHERE NOT allow_negative AND balance < 0"
    )
    found += [f"account {account} overdrawn: {balance}" for account, balance in overdrawn]

    # Each transfer's effect is in the ledger once: an entry for each completed
    # one, none for a failed one or one the ledger must not know.
    entries = dict(
        accounts_sql(
            env,
            "SELECT transfer_id, count(*) FROM journal_entries"
            " WHERE transfer_id = ANY(%s) GROUP BY transfer_id",
            (list(views),),
        )
    )
    for transfer_id, view in views.items():
        expected = 1 if view and view["status"] == "completed" else 0
        if entries.get(transfer_id, 0) != expected:
            found.append(
                f"transfer {transfer_id} ({view}) has {entries.get(transfer_id, 0)} entries"
            )

    # Every account's history sums to its balance, and the balance is what
    # its completed transfers say it should be.
    expected = dict(opening)
    for view in filter(None, views.values()):
        amount = Decimal(view["amount"]) if view["status"] == "completed" else 0
        if view["kind"] == "deposit":
            expected[view["to_account_id"]] += amount
        else:
            expected[view["from_account_id"]] -= amount
            if view["kind"] == "internal":
                expected[view["to_account_id"]] += amount
    for account_id, customer in owners.items():
        balance = Decimal(customer.account(account_id)["balance"])
        history = history_total(customer, account_id)
        if history != balance:
            found.append(f"account {account_id}: history sums to {history}, balance {balance}")
        if balance != expected[account_id]:
            found.append(
                f"account {account_id}: balance {balance}, expected {expected[account_id]}"
            )
    return found


def full_reconciliation(api, admin_token) -> dict:
    """A full reconciliation run, started and waited for."""
    response = api.post("/v1/admin/reconciliation/runs", token=admin_token, json={"full": True})
    assert response.status_code == 202, response.text
    run = response.json()
    while run["status"] == "running":
        time.sleep(0.2)
        run = api.get(response.headers["Location"], token=admin_token).json()
    return run

"""Accounts over HTTP: opening, listing, reading, history, ownership."""

import uuid

from tests.e2e.helpers import assert_problem, signed_up


def test_open_list_and_get_accounts_with_decimal_string_balances(api):
    _, tokens = signed_up(api)
    token = tokens["access_token"]
    eur = api.post("/v1/accounts", token=token, json={"currency": "EUR", "name": "Main"})
    assert eur.status_code == 201, eur.text
    eur = eur.json()
    assert eur | {"account_id": None, "created_at": None} == {
        "account_id": None,
        "created_at": None,
        "currency": "EUR",
        "name": "Main",
        "status": "active",
        "balance": "0.00",
        "available_balance": "0.00",
    }
    jpy = api.post("/v1/accounts", token=token, json={"currency": "JPY"}).json()
    assert jpy["balance"] == "0" and jpy["name"] == "JPY account"

    listed = api.get("/v1/accounts", token=token).json()["items"]
    assert [a["account_id"] for a in listed] == [eur["account_id"], jpy["account_id"]]
    assert api.get(f"/v1/accounts/{eur['account_id']}", token=token).json() == eur
    history = api.get(f"/v1/accounts/{eur['account_id']}/transactions", token=token)
    assert history.status_code == 200
    assert history.json() == {"items": [], "next_cursor": None}


def test_another_users_account_is_404(api):
    _, alice = signed_up(api)
    _, bob = signed_up(api)
    account = api.post("/v1/accounts", token=alice["access_token"], json={"currency": "EUR"}).json()
    for path in (
        f"/v1/accounts/{account['account_id']}",
        f"/v1/accounts/{account['account_id']}/transactions",
    ):
        assert_problem(api.get(path, token=bob["access_token"]), 404, "account_not_found")
    assert api.get("/v1/accounts", token=bob["access_token"]).json() == {"items": []}
    assert_problem(api.get(f"/v1/accounts/{uuid.uuid4()}", token=alice["access_token"]), 404)
    assert_problem(api.get("/v1/accounts/not-a-uuid", token=alice["access_token"]), 404)


def test_bad_account_requests_are_422_and_open_nothing(api):
    _, tokens = signed_up(api)
    token = tokens["access_token"]
    for body, field in (
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({}, "currency"),
        ({"currency": "EUR", "owner_id": "x"}, "owner_id"),
        ({"currency": "EUR", "name": "n" * 101}, "name"),
    ):
        response = api.post("/v1/accounts", token=token, json=body)
        assert field in assert_problem(response, 422)["errors"], body
    assert api.get("/v1/accounts", token=token).json() == {"items": []}
    account = api.post("/v1/accounts", token=token, json={"currency": "EUR"}).json()
    bad_limit = api.get(f"/v1/accounts/{account['account_id']}/transactions?limit=0", token=token)
    assert "limit" in assert_problem(bad_limit, 422)["errors"]


def test_accounts_need_a_token(api):
    assert_problem(api.get("/v1/accounts"), 401)
    # Authentication is checked before the body: a bad body without a token is 401.
    assert_problem(api.post("/v1/accounts", json={"currency": "nope"}), 401)

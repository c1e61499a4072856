"""/v1/accounts: a customer's own accounts (another user's are 404)."""

from flask import jsonify

from gateway import schemas
from gateway.bodies import Blueprint
from gateway.extensions import authenticated, platform, principal
from gateway.shaping import shaped
from shared.money import format_minor

blp = Blueprint("accounts", __name__, description="Accounts and their history")

BEARER = [{"bearerAuth": []}]


def _account(view: dict) -> dict:
    currency = view["currency"]
    return {
        **view,
        "balance": format_minor(view["balance"], currency),
        "available_balance": format_minor(view["available_balance"], currency),
    }


@blp.route("/v1/accounts", methods=["POST"])
@authenticated
@blp.arguments(schemas.OpenAccountRequest())
@blp.response(201, schemas.AccountResponse)
@blp.doc(security=BEARER)
def open_account(body):
    caller = principal()
    with platform().rpc.client() as rpc:
        return _account(rpc.accounts.open_account(caller.user_id, body["currency"], body["name"]))


@blp.route("/v1/accounts", methods=["GET"])
@authenticated
@blp.response(200, schemas.AccountListResponse)
@blp.doc(security=BEARER)
def list_accounts():
    caller = principal()
    with platform().rpc.client() as rpc:
        accounts = rpc.accounts.list_accounts(caller.user_id)
    return jsonify(shaped(schemas.AccountListResponse, {"items": [_account(a) for a in accounts]}))


@blp.route("/v1/accounts/<uuid:account_id>", methods=["GET"])
@authenticated
@blp.response(200, schemas.AccountResponse)
@blp.doc(security=BEARER)
def get_account(account_id):
    caller = principal()
    with platform().rpc.client() as rpc:
        account = rpc.accounts.get_account(caller.user_id, str(account_id))
    return jsonify(shaped(schemas.AccountResponse, _account(account)))


@blp.route("/v1/accounts/<uuid:account_id>/transactions", methods=["GET"])
@authenticated
@blp.arguments(schemas.HistoryQuery(), location="query")
@blp.response(200, schemas.AccountTransactionsResponse)
@blp.doc(security=BEARER)
def list_transactions(query, account_id):
    caller = principal()
    with platform().rpc.client() as rpc:
        page = rpc.accounts.list_transactions(
            caller.user_id, str(account_id), query["limit"], query["cursor"]
        )
    items = [
        {
            **item,
            "amount": format_minor(item["amount"], item["currency"]),
            "balance_after": format_minor(item["balance_after"], item["currency"]),
        }
        for item in page["items"]
    ]
    return jsonify(
        shaped(
            schemas.AccountTransactionsResponse,
            {"items": items, "next_cursor": page["next_cursor"]},
        )
    )

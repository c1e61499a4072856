"""/v1/deposits, /v1/transfers, /v1/payouts: money movement (202, then poll).

A client that prefers not to poll sends `Prefer: wait=N` (RFC 7240, N up
to 10 seconds): the POST then answers 201 with the whole transfer as soon
as it is completed or failed, or 202 as usual if N seconds pass first; a
GET answers once the transfer is no longer pending, or after N seconds
(gateway.outcomes). Without the header nothing changes.

A POST that waits starts the transfer with this process's outcome route,
so its outcome comes here; it reads the transfer only after a second
(the outcome normally comes first), for a repeated Idempotency-Key whose
transfer was started by another process. A GET's transfer may have been
started anywhere, so it reads sooner.
"""

import functools

from flask import jsonify, request

from gateway import schemas
from gateway.bodies import Blueprint
from gateway.extensions import authenticated, platform, principal
from gateway.outcomes import preferred_wait
from gateway.shaping import shaped
from shared import contracts
from shared.errors import BadRequest
from shared.money import Money, format_minor

blp = Blueprint("transfers", __name__, description="Deposits, transfers and payouts")

BEARER = [{"bearerAuth": []}]
IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY_PARAMETER = {
    "in": "header",
    "name": IDEMPOTENCY_HEADER,
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Same key and body: the first response again; same key, other body: 409.",
}
_PREFER_PARAMETER = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"type": "string", "example": "wait=5"},
    "description": "wait=N (seconds, at most 10): answer once the transfer has ended, "
    "or after N seconds, whichever is first.",
}


def _idempotency_key() -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not 1 <= len(key) <= 255:
        raise BadRequest(
            "idempotency_key_required",
            "POSTs that move money need an Idempotency-Key header (1-255 chars).",
            {IDEMPOTENCY_HEADER: ["Required, 1 to 255 characters."]},
        )
    return key


def _start(kind: str, body: dict, **accounts) -> dict:
    caller = principal()
    key = _idempotency_key()
    money = Money.parse(body["amount"], body["currency"])
    transfer = {
        "kind": kind,
        "amount": money.minor_units,
        "currency": money.currency,
        "reference": body.get("reference"),
        "source": body.get("source"),
        "beneficiary": body.get("beneficiary"),
        **{name: str(value) for name, value in accounts.items()},
    }
    wait = preferred_wait(request.headers.get("Prefer"))
    # Told to this process only if it waits (and can: its feed listens).
    notify = platform().outcomes.route() if wait else None
    with platform().rpc.client() as rpc:
        accepted = rpc.transactions.create_transfer(caller.user_id, key, transfer, notify)
    if notify is None:
        return accepted
    transfer_id = accepted["transfer_id"]
    with platform().outcomes.watch(transfer_id) as watch:
        view = (
            watch.wait_or_read(wait, lambda: _ended(transfer_id), poll_after=_POST_POLL_AFTER)
            if watch is not None
            else None
        )
    if view is None:
        return accepted
    # Ended within the wait: the whole transfer, created (201).
    response = jsonify(shaped(schemas.TransferResponse, _transfer(view)))
    response.status_code = 201
    response.headers["Preference-Applied"] = f"wait={wait}"
    response.headers["Location"] = f"/v1/transfers/{accepted['transfer_id']}"
    return response


def _moves_money(path: str, request_schema: type[schemas.Schema]):
    """Route a POST that starts a transfer: 202 with its id, or 201 with the
    whole transfer when it ended within `Prefer: wait`."""
    decorators = (
        blp.route(path, methods=["POST"]),
        authenticated,
        blp.arguments(request_schema()),
        blp.response(202, schemas.TransferAccepted),
        blp.alt_response(
            201, schema=schemas.TransferResponse, description="Ended within Prefer: wait"
        ),
        blp.doc(security=BEARER, parameters=[_KEY_PARAMETER, _PREFER_PARAMETER]),
    )
    return lambda view: functools.reduce(
        lambda v, decorate: decorate(v), reversed(decorators), view
    )


@_moves_money("/v1/deposits", schemas.DepositRequest)
def deposit(body):
    return _start(contracts.KIND_DEPOSIT, body, to_account_id=body["account_id"])


@_moves_money("/v1/transfers", schemas.TransferRequest)
def transfer(body):
    return _start(
        contracts.KIND_INTERNAL,
        body,
        from_account_id=body["from_account_id"],
        to_account_id=body["to_account_id"],
    )


@_moves_money("/v1/payouts", schemas.PayoutRequest)
def payout(body):
    return _start(contracts.KIND_PAYOUT, body, from_account_id=body["from_account_id"])


def _transfer(view: dict) -> dict:
    return {**view, "amount": format_minor(view["amount"], view["currency"])}


@blp.route("/v1/transfers/<uuid:transfer_id>", methods=["GET"])
@authenticated
@blp.response(200, schemas.TransferResponse)
@blp.doc(security=BEARER, parameters=[_PREFER_PARAMETER])
def get_transfer(transfer_id):
    wait = preferred_wait(request.headers.get("Prefer"))
    if not wait:
        return jsonify(shaped(schemas.TransferResponse, _transfer(_read(transfer_id))))
    with platform().outcomes.watch(str(transfer_id)) as watch:
        view = _read(transfer_id)  # watched first: an end published meanwhile is not missed
        if view["status"] == "pending" and watch is not None:
            ended = watch.wait_or_read(
                wait, lambda: _ended(transfer_id), poll_after=_GET_POLL_AFTER
            )
            view = ended or view
    return jsonify(shaped(schemas.TransferResponse, _transfer(view)))


# When a waiting request first reads the transfer itself (see the module's docstring).
_POST_POLL_AFTER = 1.0
_GET_POLL_AFTER = 0.25


def _read(transfer_id) -> dict:
    """The caller's transfer (404 if it is not theirs)."""
    with platform().rpc.client() as rpc:
        return rpc.transactions.get_transfer(principal().user_id, str(transfer_id))


def _ended(transfer_id) -> dict | None:
    """The caller's transfer once it is no longer pending; None while it is."""
    view = _read(transfer_id)
    return None if view["status"] == "pending" else view


@blp.route("/v1/transfers", methods=["GET"])
@authenticated
@blp.arguments(schemas.TransferListQuery(), location="query")
@blp.response(200, schemas.TransferListResponse)
@blp.doc(security=BEARER)
def list_transfers(query):
    with platform().rpc.client() as rpc:
        page = rpc.transactions.list_transfers(
            principal().user_id,
            str(query["account_id"]) if query["account_id"] else None,
            query["status"],
            query["limit"],
            query["cursor"],
        )
    return jsonify(
        shaped(
            schemas.TransferListResponse,
            {
                "items": [_transfer(item) for item in page["items"]],
                "next_cursor": page["next_cursor"],
            },
        )
    )

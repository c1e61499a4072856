"""Responses shaped from their schema equal marshmallow's dump of the same data."""

import uuid
from datetime import datetime

import pytest
from marshmallow import Schema, fields

from gateway import schemas
from gateway.shaping import shaped


def account(**overrides):
    return {
        "account_id": str(uuid.uuid4()),
        "currency": "EUR",
        "name": "Main",
        "status": "active",
        "balance": "12.34",
        "available_balance": "10.00",
        "created_at": "2026-12-01T10:00:00+00:00",
        "owner_id": "not in the schema: left out",
        **overrides,
    }


def transfer(**overrides):
    return {
        "transfer_id": str(uuid.uuid4()),
        "kind": "internal",
        "status": "completed",
        "failure_reason": None,
        "amount": "5.00",
        "currency": "EUR",
        "from_account_id": str(uuid.uuid4()),
        "to_account_id": str(uuid.uuid4()),
        "reference": "rent",
        "created_at": "2026-12-01T10:00:00+00:00",
        "updated_at": "2026-12-01T10:00:01+00:00",
        "steps": [
            {"type": "transfer_approved", "at": "2026-12-01T10:00:00+00:00", "x": 1},
            {"type": "transfer_posted", "at": "2026-12-01T10:00:01+00:00"},
        ],
        "position": 42,
        **overrides,
    }


CASES = [
    (schemas.AccountResponse, account()),
    (schemas.AccountResponse, account(name=None)),
    (schemas.AccountListResponse, {"items": [account(), account(status="closed")]}),
    (schemas.AccountListResponse, {"items": []}),
    (schemas.TransferResponse, transfer()),
    (schemas.TransferResponse, transfer(to_account_id=None, steps=[], reference=None)),
    (schemas.TransferListResponse, {"items": [transfer(), transfer()], "next_cursor": "17"}),
    (schemas.TransferListResponse, {"items": [], "next_cursor": None}),
    (
        schemas.AccountTransactionsResponse,
        {
            "items": [
                {
                    "entry_id": str(uuid.uuid4()),
                    "transfer_id": None,
                    "amount": "-1.00",
                    "currency": "EUR",
                    "balance_after": "4.00",
                    "description": "Transfer",
                    "created_at": "2026-12-01T10:00:00+00:00",
                }
            ],
            "next_cursor": None,
        },
    ),
    (schemas.TransferResponse, {"transfer_id": str(uuid.uuid4())}),  # missing keys stay out
]


@pytest.mark.parametrize(("schema", "data"), CASES)
def test_shaping_gives_what_marshmallow_dumps(schema, data):
    assert shaped(schema, data) == schema().dump(data)


def test_a_schema_that_converts_values_is_dumped_by_marshmallow():
    class Converting(Schema):
        count = fields.Integer()
        when = fields.DateTime()

    data = {"count": "3", "when": datetime(2026, 12, 1, 10, 0)}
    assert (
        shaped(Converting, data)
        == Converting().dump(data)
        == {
            "count": 3,
            "when": "2026-12-01T10:00:00",
        }
    )

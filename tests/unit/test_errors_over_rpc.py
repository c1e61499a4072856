"""Our error categories survive nameko's RPC error serialisation intact."""

import json

import pytest
from nameko.exceptions import deserialize, serialize

from shared.errors import (
    HTTP_STATUS,
    Conflict,
    InvalidInput,
    Locked,
    NotFound,
    ServiceError,
    Unauthenticated,
    http_status,
)
from shared.rpc import register_error_types

# What building any of our RPC clients does.
register_error_types()


@pytest.mark.parametrize("category", list(HTTP_STATUS))
def test_each_category_crosses_rpc_with_code_detail_and_errors(category):
    sent = category("some_code", "Some detail.", {"field": ["Bad."]})
    received = deserialize(json.loads(json.dumps(serialize(sent))))
    assert type(received) is category
    assert (received.code, received.detail, received.errors) == (
        "some_code",
        "Some detail.",
        {"field": ["Bad."]},
    )


def test_no_field_errors_stay_none_after_the_round_trip():
    received = deserialize(json.loads(json.dumps(serialize(NotFound("x", "y")))))
    assert received.errors is None


def test_one_table_maps_categories_to_statuses():
    assert http_status(InvalidInput("c")) == 422
    assert http_status(Unauthenticated("c")) == 401
    assert http_status(NotFound("c")) == 404
    assert http_status(Conflict("c")) == 409
    assert http_status(Locked("c")) == 423
    assert http_status(ServiceError("c")) == 500

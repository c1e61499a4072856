import uuid

import pytest
from marshmallow import ValidationError

from gateway import schemas as gateway_schemas
from services.payments import schemas as payments_schemas
from services.transactions import schemas as transactions_schemas
from shared import iban


@pytest.mark.parametrize(
    "valid",
    [
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "fr1420041010050500013m02606",
        "NL91ABNA0417164300",
    ],
)
def test_valid_ibans_pass_with_any_spacing_or_case(valid):
    assert iban.is_valid(valid)


@pytest.mark.parametrize(
    "invalid",
    [
        "DE89370400440532013001",  # one digit off: the check digits catch it
        "GB82WEST12345698765433",
        "DE89",
        "1234567890123456",
        "DE89-3704-0044-0532-0130-00",
        "",
    ],
)
def test_mistyped_or_malformed_ibans_fail(invalid):
    assert not iban.is_valid(invalid)


# One rule wherever an IBAN is accepted: the gateway's request, transactions'
# and payments' RPC arguments all load the beneficiary with the same schema.
PAYOUT = {"amount": 100, "currency": "EUR"}
BENEFICIARY_OF = {
    "gateway": (
        gateway_schemas.PayoutRequest,
        {"amount": "1.00", "currency": "EUR", "from_account_id": str(uuid.uuid4())},
    ),
    "transactions": (transactions_schemas.TransferRequestArgs, {**PAYOUT, "kind": "payout"}),
    "payments": (payments_schemas.PayoutArgs, {**PAYOUT, "transfer_id": str(uuid.uuid4())}),
}


@pytest.mark.parametrize("where", sorted(BENEFICIARY_OF))
def test_every_place_that_takes_a_beneficiary_checks_its_iban_alike(where):
    schema, request = BENEFICIARY_OF[where]
    beneficiary = {"name": "  Ada   Lovelace ", "iban": "de89 3704 0044 0532 0130 00"}
    loaded = schema().load({**request, "beneficiary": beneficiary})
    assert loaded["beneficiary"] == {"name": "Ada Lovelace", "iban": "DE89370400440532013000"}
    mistyped = {**beneficiary, "iban": "DE89370400440532013001"}
    for refused in (mistyped, {**beneficiary, "name": " "}):
        with pytest.raises(ValidationError) as refusal:
            schema().load({**request, "beneficiary": refused})
        assert list(refusal.value.messages) == ["beneficiary"]

"""payments' rules: idempotency keys, outcome events, IBANs."""

import pytest

from services.payments.domain import (
    WEBHOOK_OUTCOMES,
    OperationKind,
    OperationStatus,
    idempotency_key,
    normalize_beneficiary,
    outcome_event,
    request_fingerprint,
)
from shared import contracts
from shared import iban as iban_format

TRANSFER = "8d3a4c1e-0f7b-4e55-9a51-3c8b7f0f2f10"


def test_an_operation_has_one_idempotency_key_per_transfer_and_kind():
    assert idempotency_key(OperationKind.CHARGE, TRANSFER) == idempotency_key("charge", TRANSFER)
    assert idempotency_key(OperationKind.CHARGE, TRANSFER) != idempotency_key(
        OperationKind.PAYOUT, TRANSFER
    )


def test_the_request_fingerprint_ignores_key_order_but_not_values():
    first = request_fingerprint({"amount": 100, "currency": "EUR", "token": "tok_ok"})
    assert first == request_fingerprint({"token": "tok_ok", "currency": "EUR", "amount": 100})
    assert first != request_fingerprint({"amount": 101, "currency": "EUR", "token": "tok_ok"})


@pytest.mark.parametrize(
    ("kind", "status", "event_type", "reason"),
    [
        (OperationKind.CHARGE, OperationStatus.SUCCEEDED, contracts.CARD_CHARGED, None),
        (
            OperationKind.CHARGE,
            OperationStatus.FAILED,
            contracts.CARD_CHARGE_FAILED,
            contracts.REASON_CARD_DECLINED,
        ),
        (OperationKind.PAYOUT, OperationStatus.SUCCEEDED, contracts.PAYOUT_SUCCEEDED, None),
        (
            OperationKind.PAYOUT,
            OperationStatus.FAILED,
            contracts.PAYOUT_FAILED,
            contracts.REASON_PAYOUT_FAILED,
        ),
    ],
)
def test_each_outcome_has_its_event_and_failures_a_transfer_reason(
    kind, status, event_type, reason
):
    emitted = outcome_event(
        kind,
        status,
        transfer_id=TRANSFER,
        provider="sandbox",
        provider_reference="ref_1",
        provider_reason="insufficient_funds" if reason else None,
        amount=100,
        currency="EUR",
        transfer=None,
    )
    payload = emitted.payload()
    assert event_type == emitted.TYPE
    assert payload["transfer_id"] == TRANSFER
    assert payload["provider"] == "sandbox" and payload["provider_reference"] == "ref_1"
    assert payload.get("reason") == reason
    if reason:
        assert payload["provider_reason"] == "insufficient_funds"


def test_webhook_types_map_to_the_outcome_they_report():
    assert WEBHOOK_OUTCOMES["charge.failed"] == (OperationKind.CHARGE, OperationStatus.FAILED)
    assert WEBHOOK_OUTCOMES["payout.succeeded"] == (
        OperationKind.PAYOUT,
        OperationStatus.SUCCEEDED,
    )


@pytest.mark.parametrize(
    "iban", ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "fr1420041010050500013m02606"]
)
def test_well_formed_ibans_pass_the_mod_97_check(iban):
    assert iban_format.is_valid(iban)


@pytest.mark.parametrize(
    "iban", ["", "DE89", "DE89370400440532013001", "XX00370400440532013000", "DE89-3704-0044"]
)
def test_malformed_ibans_fail(iban):
    assert not iban_format.is_valid(iban)


def test_check_digits_make_any_account_number_a_valid_iban():
    iban = "DE" + iban_format.check_digits("DE", "370400440532010000") + "370400440532010000"
    assert iban == "DE94370400440532010000"
    assert iban_format.is_valid(iban)


def test_a_beneficiary_is_compared_without_formatting():
    assert normalize_beneficiary("  Ada   Lovelace ", "de89 3704 0044 0532 0130 00") == {
        "name": "Ada Lovelace",
        "iban": "DE89370400440532013000",
    }

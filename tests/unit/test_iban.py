import pytest

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

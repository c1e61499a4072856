import pytest

from shared.errors import InvalidInput
from shared.money import Money, format_minor, minor_digits


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12.3", "EUR", 1230),
        ("12", "USD", 1200),
        ("1234", "JPY", 1234),
        ("0.001", "KWD", 1),
        ("0.01", "GBP", 1),
        ("10000000000000.00", "EUR", 10**15),  # the ceiling itself
    ],
)
def test_parses_decimal_strings_into_minor_units(amount, currency, minor):
    assert Money.parse(amount, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "reason"),
    [
        (12.34, "EUR", "not a number"),
        ("12.345", "EUR", "at most 2 decimal places"),
        ("12.5", "JPY", "at most 0 decimal places"),
        ("0", "EUR", "greater than zero"),
        ("0.00", "EUR", "greater than zero"),
        ("-5.00", "EUR", "decimal string"),
        ("1e3", "EUR", "decimal string"),
        ("01.00", "EUR", "decimal string"),
        (" 1.00", "EUR", "decimal string"),
        ("1,00", "EUR", "decimal string"),
        ("NaN", "EUR", "decimal string"),
        ("10000000000000.01", "EUR", "Too large"),  # past 10**15 minor units
        ("999999999999999999.99", "EUR", "Too large"),  # would overflow a 64-bit column
    ],
)
def test_refuses_amounts_that_are_not_positive_decimal_strings(amount, currency, reason):
    with pytest.raises(InvalidInput) as caught:
        Money.parse(amount, currency)
    assert caught.value.code == "invalid_amount"
    assert reason in caught.value.errors["amount"][0]


def test_unknown_currency_is_invalid_input():
    with pytest.raises(InvalidInput) as caught:
        Money.parse("1.00", "ABC")
    assert caught.value.code == "unsupported_currency"
    assert "currency" in caught.value.errors


def test_formats_with_the_currency_minor_digits_including_negatives():
    assert format_minor(1234, "EUR") == "12.34"
    assert format_minor(5, "EUR") == "0.05"
    assert format_minor(-5, "EUR") == "-0.05"
    assert format_minor(0, "USD") == "0.00"
    assert format_minor(1234, "JPY") == "1234"
    assert format_minor(1, "KWD") == "0.001"


def test_round_trips_without_floats():
    for text in ("0.10", "0.20", "0.30", "1234567890123.45"):
        assert Money.parse(text, "EUR").format() == text
    assert minor_digits("JPY") == 0

import pytest

from services.accounts.domain import (
    Posting,
    UnbalancedEntry,
    account_name,
    available_balance,
    check_balanced,
    check_currency,
)
from shared.errors import InvalidInput


def test_a_transfer_entry_balances():
    check_balanced([Posting("a", -500, "EUR"), Posting("b", 500, "EUR")])
    check_balanced(
        [Posting("a", -500, "EUR"), Posting("b", 300, "EUR"), Posting("fees", 200, "EUR")]
    )


@pytest.mark.parametrize(
    "postings",
    [
        [Posting("a", -500, "EUR")],
        [Posting("a", -500, "EUR"), Posting("b", 499, "EUR")],
        [Posting("a", -500, "EUR"), Posting("b", 500, "USD")],
        [Posting("a", 0, "EUR"), Posting("b", 0, "EUR")],
    ],
)
def test_unbalanced_or_degenerate_entries_are_refused(postings):
    with pytest.raises(UnbalancedEntry):
        check_balanced(postings)


def test_available_balance_subtracts_holds():
    assert available_balance(10_000, 2_500) == 7_500


def test_account_names_default_to_the_currency_and_are_bounded():
    assert account_name(None, "EUR") == "EUR account"
    assert account_name("  Rainy   day ", "EUR") == "Rainy day"
    with pytest.raises(InvalidInput):
        account_name("x" * 101, "EUR")


def test_only_supported_currencies_open_accounts():
    assert check_currency("JPY") == "JPY"
    with pytest.raises(InvalidInput):
        check_currency("XYZ")

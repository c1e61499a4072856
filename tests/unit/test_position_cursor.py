"""Keyset page cursors (accounts' postings, transactions' transfers): a position, or an error."""

import pytest

from shared.errors import InvalidInput
from shared.schemas import position_cursor


def test_a_cursor_is_the_position_it_names():
    assert position_cursor(None) is None
    assert position_cursor("") is None
    assert position_cursor("42") == 42
    assert position_cursor("9" * 18) == int("9" * 18)


@pytest.mark.parametrize("cursor", ["-1", "4.2", "abc", "9" * 19, " 42", "42\n"])
def test_anything_else_is_invalid_input(cursor):
    with pytest.raises(InvalidInput) as raised:
        position_cursor(cursor)
    assert raised.value.code == "invalid_cursor"

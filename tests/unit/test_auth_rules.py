from datetime import UTC, datetime, timedelta

import pytest

from services.auth.domain import (
    LockoutPolicy,
    check_full_name,
    check_password_policy,
    normalise_email,
    token_digest,
)
from shared.errors import InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_emails_are_trimmed_and_case_folded():
    assert normalise_email("  Alice.Smith@Example.COM ") == "alice.smith@example.com"
    # NFKC: a full-width @ is the same address as an ASCII one
    assert normalise_email("bob\uff20example.com") == "bob@example.com"


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "a@b",
        "a@@b.com",
        "a b@c.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_malformed_emails_are_refused(email):
    with pytest.raises(InvalidInput) as caught:
        normalise_email(email)
    assert caught.value.errors == {"email": ["Not a valid email address."]}


def test_password_policy_needs_twelve_characters_and_caps_length():
    check_password_policy("twelve chars")
    for weak in ("short", "elevenchars", " " * 20, "x" * 1025):
        with pytest.raises(InvalidInput) as caught:
            check_password_policy(weak)
        assert caught.value.code == "weak_password"


def test_full_name_whitespace_is_collapsed():
    assert check_full_name("  Ada   Lovelace ") == "Ada Lovelace"
    with pytest.raises(InvalidInput):
        check_full_name("   ")


def test_lockout_after_the_fifth_consecutive_failure():
    policy = LockoutPolicy(max_failures=5, lock_for=timedelta(minutes=15))
    assert [policy.lock_after(n, NOW) for n in range(1, 5)] == [None] * 4
    until = policy.lock_after(5, NOW)
    assert until == NOW + timedelta(minutes=15)
    assert policy.is_locked(until, NOW + timedelta(minutes=14))
    assert not policy.is_locked(until, NOW + timedelta(minutes=15))
    assert not policy.is_locked(None, NOW)


def test_token_digest_is_stable_and_does_not_reveal_the_token():
    assert token_digest("abc") == token_digest("abc")
    assert "abc" not in token_digest("abc")
    assert len(token_digest("abc")) == 64

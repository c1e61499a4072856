"""risk's rules and scoring, as pure functions (services/risk/domain.py)."""

import os
from datetime import UTC, datetime, timedelta

import pytest

from services.risk import domain
from services.risk.domain import RiskLimits, Velocity
from shared import contracts
from shared.config import ConfigError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = RiskLimits()
NO_VELOCITY = Velocity()
EUR_LIMIT = 1_000_000  # EUR 10,000.00


def assess(amount, currency="EUR", opened_at=None, velocity=NO_VELOCITY, limits=LIMITS):
    return domain.assess(
        amount=amount,
        currency=currency,
        account_opened_at=opened_at,
        velocity=velocity,
        now=NOW,
        limits=limits,
    )


# -- limits per currency ------------------------------------------------------


def test_limits_are_whole_units_scaled_by_the_currencys_minor_digits():
    assert LIMITS.transfer_limit("EUR") == EUR_LIMIT
    assert LIMITS.transfer_limit("USD") == 1_000_000
    assert LIMITS.transfer_limit("GBP") == 850_000
    assert LIMITS.transfer_limit("JPY") == 1_500_000  # yen have no minor unit
    assert LIMITS.transfer_limit("BHD") == 4_000_000  # three digits
    assert LIMITS.new_account_limit("EUR") == 100_000
    assert LIMITS.daily_amount_limit("EUR") == 3_000_000


def test_a_currency_without_its_own_limit_gets_the_generic_one_in_its_digits():
    limits = RiskLimits(transfer_limits={}, default_transfer_limit=500)
    assert limits.transfer_limit("EUR") == 50_000
    assert limits.transfer_limit("JPY") == 500
    assert limits.transfer_limit("KWD") == 500_000
    assert limits.transfer_limit("XXX") == 50_000  # unknown: two digits


def test_every_supported_currency_has_a_default_limit():
    from shared.money import CURRENCY_DIGITS

    assert set(domain.DEFAULT_TRANSFER_LIMITS) == set(CURRENCY_DIGITS)


# -- per-transfer limit ---------------------------------------------------------


def test_a_small_transfer_is_approved_with_no_reasons():
    decision = assess(5_000)
    assert decision == domain.Decision(contracts.APPROVE, 0, ())
    assert decision.approved


def test_up_to_the_limit_is_approved_one_minor_unit_more_is_rejected():
    assert domain.per_transfer_limit_rule(EUR_LIMIT, "EUR", LIMITS) == []
    assert domain.per_transfer_limit_rule(EUR_LIMIT + 1, "EUR", LIMITS) == [
        domain.AMOUNT_OVER_LIMIT
    ]
    at_limit = assess(EUR_LIMIT)
    assert at_limit.decision == contracts.APPROVE
    assert at_limit.reasons == (domain.LARGE_AMOUNT,)
    over = assess(EUR_LIMIT + 1)
    assert over.decision == contracts.REJECT
    assert over.score == 100
    assert domain.AMOUNT_OVER_LIMIT in over.reasons


def test_the_same_number_means_different_things_in_different_currencies():
    assert assess(1_200_000, "JPY").decision == contracts.APPROVE  # JPY 1.2 million
    assert assess(1_200_000, "EUR").decision == contracts.REJECT  # EUR 12,000.00


# -- large amount (soft) --------------------------------------------------------


def test_large_amount_is_above_half_of_the_applicable_limit_and_within_it():
    half = EUR_LIMIT // 2
    assert domain.large_amount_rule(half, "EUR", False, LIMITS) == []
    assert domain.large_amount_rule(half + 1, "EUR", False, LIMITS) == [domain.LARGE_AMOUNT]
    assert domain.large_amount_rule(EUR_LIMIT + 1, "EUR", False, LIMITS) == []
    # A new account's limit is lower, and so is its "large".
    assert domain.large_amount_rule(60_000, "EUR", True, LIMITS) == [domain.LARGE_AMOUNT]
    decision = assess(half + 1)
    assert decision == domain.Decision(contracts.APPROVE, 30, (domain.LARGE_AMOUNT,))


# -- new accounts -------------------------------------------------------------


def test_an_account_younger_than_the_new_account_age_is_new():
    assert domain.is_new_account(NOW - timedelta(hours=23, minutes=59), NOW, LIMITS)
    assert not domain.is_new_account(NOW - timedelta(hours=24), NOW, LIMITS)


def test_an_account_of_unknown_age_is_not_new():
    assert not domain.is_new_account(None, NOW, LIMITS)
    assert assess(200_000, opened_at=None).decision == contracts.APPROVE


def test_a_new_account_has_a_lower_per_transfer_limit():
    young = NOW - timedelta(hours=1)
    assert domain.new_account_rule(100_000, "EUR", True, LIMITS) == [domain.NEW_ACCOUNT]
    assert domain.new_account_rule(100_001, "EUR", True, LIMITS) == [domain.NEW_ACCOUNT_LIMIT]
    assert domain.new_account_rule(100_001, "EUR", False, LIMITS) == []
    rejected = assess(100_001, opened_at=young)
    assert rejected.decision == contracts.REJECT
    assert rejected.reasons == (domain.NEW_ACCOUNT_LIMIT,)
    assert rejected.score == 80
    # The same amount a day later is fine.
    assert assess(100_001, opened_at=NOW - timedelta(days=2)).decision == contracts.APPROVE


def test_a_new_account_within_its_limit_is_approved_with_the_signal_noted():
    small = assess(1_000, opened_at=NOW - timedelta(minutes=5))
    assert small == domain.Decision(contracts.APPROVE, 20, (domain.NEW_ACCOUNT,))
    largish = assess(60_000, opened_at=NOW - timedelta(minutes=5))
    assert largish.decision == contracts.APPROVE
    assert largish.score == 50
    assert set(largish.reasons) == {domain.NEW_ACCOUNT, domain.LARGE_AMOUNT}


# -- velocity ---------------------------------------------------------------------


def test_the_daily_count_includes_the_transfer_being_assessed():
    limit = LIMITS.daily_count
    assert domain.velocity_rule(100, "EUR", Velocity(limit - 1, 100), LIMITS) == []
    assert domain.velocity_rule(100, "EUR", Velocity(limit, 100), LIMITS) == [
        domain.DAILY_COUNT_EXCEEDED
    ]
    assert assess(100, velocity=Velocity(limit - 1, 0)).decision == contracts.APPROVE
    rejected = assess(100, velocity=Velocity(limit, 0))
    assert rejected == domain.Decision(contracts.REJECT, 70, (domain.DAILY_COUNT_EXCEEDED,))


def test_the_daily_amount_includes_the_transfer_being_assessed():
    daily = LIMITS.daily_amount_limit("EUR")
    assert domain.velocity_rule(400_000, "EUR", Velocity(2, daily - 400_000), LIMITS) == []
    assert domain.velocity_rule(400_001, "EUR", Velocity(2, daily - 400_000), LIMITS) == [
        domain.DAILY_AMOUNT_EXCEEDED
    ]
    rejected = assess(400_001, velocity=Velocity(2, daily - 400_000))
    assert rejected.decision == contracts.REJECT
    assert rejected.reasons == (domain.DAILY_AMOUNT_EXCEEDED,)


def test_count_and_amount_can_both_be_exceeded():
    reasons = domain.velocity_rule(10, "EUR", Velocity(50, 10_000_000), LIMITS)
    assert reasons == [domain.DAILY_COUNT_EXCEEDED, domain.DAILY_AMOUNT_EXCEEDED]


# -- score and decision ---------------------------------------------------------


def test_the_score_is_the_sum_of_the_reasons_capped_at_100():
    assert domain.score([]) == 0
    assert domain.score([domain.LARGE_AMOUNT, domain.NEW_ACCOUNT]) == 50
    assert domain.score([domain.AMOUNT_OVER_LIMIT, domain.DAILY_COUNT_EXCEEDED]) == 100
    everything = assess(
        EUR_LIMIT * 5, opened_at=NOW - timedelta(hours=1), velocity=Velocity(99, 99_000_000)
    )
    assert everything.score == 100
    assert everything.reasons == (
        domain.AMOUNT_OVER_LIMIT,
        domain.NEW_ACCOUNT_LIMIT,
        domain.DAILY_COUNT_EXCEEDED,
        domain.DAILY_AMOUNT_EXCEEDED,
    )


def test_reject_at_or_above_the_threshold_never_review():
    assert domain.decide(69, LIMITS) == contracts.APPROVE
    assert domain.decide(70, LIMITS) == contracts.REJECT
    assert domain.decide(100, LIMITS) == contracts.REJECT
    for points in range(101):
        assert domain.decide(points, LIMITS) in (contracts.APPROVE, contracts.REJECT)


def test_a_lower_threshold_turns_soft_signals_into_a_rejection():
    strict = RiskLimits(reject_score=50)
    decision = assess(60_000, opened_at=NOW - timedelta(minutes=5), limits=strict)
    assert decision.decision == contracts.REJECT
    assert decision.score == 50


def test_only_internal_transfers_and_payouts_are_assessed():
    assert domain.is_assessed(contracts.KIND_INTERNAL)
    assert domain.is_assessed(contracts.KIND_PAYOUT)
    assert not domain.is_assessed(contracts.KIND_DEPOSIT)
    assert not domain.is_assessed(None)


# -- configuration ------------------------------------------------------------------


def test_defaults_when_nothing_is_set(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RISK_"):
            monkeypatch.delenv(name)
    assert RiskLimits.from_env() == RiskLimits()


def test_every_threshold_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RISK_TRANSFER_LIMIT_EUR", "500")
    monkeypatch.setenv("RISK_TRANSFER_LIMIT_JPY", "100000")
    monkeypatch.setenv("RISK_TRANSFER_LIMIT_DEFAULT", "2000")
    monkeypatch.setenv("RISK_DAILY_COUNT", "3")
    monkeypatch.setenv("RISK_DAILY_AMOUNT_PERCENT", "150")
    monkeypatch.setenv("RISK_VELOCITY_WINDOW_HOURS", "12")
    monkeypatch.setenv("RISK_NEW_ACCOUNT_HOURS", "48")
    monkeypatch.setenv("RISK_NEW_ACCOUNT_LIMIT_PERCENT", "20")
    monkeypatch.setenv("RISK_LARGE_AMOUNT_PERCENT", "80")
    monkeypatch.setenv("RISK_REJECT_SCORE", "90")
    limits = RiskLimits.from_env()
    assert limits.transfer_limit("EUR") == 50_000
    assert limits.transfer_limit("JPY") == 100_000
    assert limits.transfer_limit("USD") == 1_000_000  # its own default stays
    assert limits.default_transfer_limit == 2000
    assert limits.daily_count == 3
    assert limits.daily_amount_limit("EUR") == 75_000
    assert limits.velocity_window == timedelta(hours=12)
    assert limits.new_account_age == timedelta(hours=48)
    assert limits.new_account_limit("EUR") == 10_000
    assert limits.large_amount_percent == 80
    assert limits.reject_score == 90


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RISK_TRANSFER_LIMIT_EUR", "ten"),
        ("RISK_TRANSFER_LIMIT_GBP", "0"),
        ("RISK_DAILY_COUNT", "0"),
        ("RISK_REJECT_SCORE", "0"),
        ("RISK_REJECT_SCORE", "101"),
    ],
)
def test_a_bad_value_stops_the_service_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        RiskLimits.from_env()

"""risk's rules and scoring, as pure functions (services/risk/domain.py)."""

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.risk import domain, schemas
from services.risk.domain import Facts, RuleSet, Window
from shared import contracts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = RuleSet()
EUR_LIMIT = 1_000_000  # EUR 10,000.00
YOUNG = NOW - timedelta(hours=1)


def assess(amount, currency="EUR", rules=RULES, now=NOW, **facts):
    return domain.assess(Facts(amount=amount, currency=currency, **facts), now, rules)


def document_rules(document, version=1):
    """A RuleSet from a document, through the same checks an admin's goes through."""
    return RuleSet.from_document(schemas.RuleSetDocument().load(document), version)


# -- limits per currency and tier ------------------------------------------------


def test_the_default_tier_sets_every_supported_currency_in_its_own_digits():
    assert set(RULES.tiers[domain.DEFAULT_TIER].currencies) == set(domain.CURRENCY_DIGITS)
    assert RULES.limits(None, "EUR").per_transfer == EUR_LIMIT
    assert RULES.limits(None, "JPY").per_transfer == 1_500_000  # no minor digits
    assert RULES.limits(None, "BHD").per_transfer == 4_000_000  # three
    assert RULES.limits(None, "EUR").hourly_amount == EUR_LIMIT * 3 // 2
    assert RULES.limits(None, "EUR").daily_amount == EUR_LIMIT * 3


def test_a_small_transfer_is_approved_with_no_reasons():
    decision = assess(5_000)
    assert (decision.decision, decision.score, decision.reasons) == (contracts.APPROVE, 0, ())
    assert decision.approved
    assert decision.signals["tier"] == domain.DEFAULT_TIER
    assert decision.signals["per_transfer_limit"] == "10000.00"


def test_up_to_the_limit_is_approved_one_minor_unit_more_is_rejected():
    at_limit = assess(EUR_LIMIT)
    assert (at_limit.decision, at_limit.reasons) == (contracts.APPROVE, (domain.LARGE_AMOUNT,))
    over = assess(EUR_LIMIT + 1)
    assert (over.decision, over.score) == (contracts.REJECT, 100)
    assert domain.AMOUNT_OVER_LIMIT in over.reasons


def test_the_same_number_means_different_things_in_different_currencies():
    assert assess(1_200_000, "JPY").decision == contracts.APPROVE  # JPY 1.2 million
    assert assess(1_200_000, "EUR").decision == contracts.REJECT  # EUR 12,000.00


def premium_document():
    document = RULES.to_document()
    document["tiers"]["premium"] = {
        "hourly_count": 20,
        "daily_count": 50,
        "currencies": {
            "EUR": {
                "per_transfer": "50000.00",
                "hourly_amount": "100000.00",
                "daily_amount": "200000.00",
            }
        },
    }
    return document


def test_a_tier_raises_limits_and_falls_back_to_the_default_for_other_currencies():
    rules = document_rules(premium_document())
    amount = 2_000_000  # EUR 20,000
    assert assess(amount, rules=rules).decision == contracts.REJECT
    premium = assess(amount, rules=rules, tier="premium")
    assert premium.decision == contracts.APPROVE
    assert premium.signals["tier"] == "premium"
    assert rules.limits("premium", "GBP") == rules.limits(domain.DEFAULT_TIER, "GBP")
    # A tier the rules no longer know gets the default tier.
    assert assess(amount, rules=rules, tier="gone").signals["tier"] == domain.DEFAULT_TIER


# -- new accounts and large amounts --------------------------------------------------


def test_an_account_younger_than_the_new_account_age_is_new_unknown_is_not():
    assert domain.is_new_account(NOW - timedelta(hours=23, minutes=59), NOW, RULES)
    assert not domain.is_new_account(NOW - timedelta(hours=24), NOW, RULES)
    assert not domain.is_new_account(None, NOW, RULES)


def test_a_new_account_has_a_lower_limit_and_its_own_large_amount():
    rejected = assess(100_001, account_opened_at=YOUNG)  # above EUR 1,000.00
    assert (rejected.decision, rejected.reasons) == (
        contracts.REJECT,
        (domain.NEW_ACCOUNT_LIMIT,),
    )
    small = assess(1_000, account_opened_at=YOUNG)
    assert (small.decision, small.score, small.reasons) == (
        contracts.APPROVE,
        10,
        (domain.NEW_ACCOUNT,),
    )
    largish = assess(60_000, account_opened_at=YOUNG)  # above half of EUR 1,000.00
    assert set(largish.reasons) == {domain.NEW_ACCOUNT, domain.LARGE_AMOUNT}
    assert largish.score == 40
    # The same amount from an older account is unremarkable.
    assert assess(100_001, account_opened_at=NOW - timedelta(days=2)).reasons == ()


# -- velocity -------------------------------------------------------------------------


def test_hourly_and_daily_counts_include_the_transfer_being_assessed():
    tier = RULES.tier(None)
    assert assess(100, last_hour=Window(tier.hourly_count - 1, 0)).reasons == ()
    hourly = assess(100, last_hour=Window(tier.hourly_count, 0), last_day=Window(5, 0))
    assert hourly.reasons == (domain.HOURLY_COUNT_EXCEEDED,)
    assert hourly.decision == contracts.APPROVE  # a signal on its own
    daily = assess(100, last_day=Window(tier.daily_count, 0))
    assert (daily.decision, daily.reasons) == (contracts.REJECT, (domain.DAILY_COUNT_EXCEEDED,))


def test_hourly_and_daily_amounts_include_the_transfer_being_assessed():
    limits = RULES.limits(None, "EUR")
    within = assess(400_000, last_hour=Window(1, limits.hourly_amount - 400_000))
    assert domain.HOURLY_AMOUNT_EXCEEDED not in within.reasons
    hourly = assess(400_001, last_hour=Window(1, limits.hourly_amount - 400_000))
    assert hourly.reasons == (domain.HOURLY_AMOUNT_EXCEEDED,)
    daily = assess(400_001, last_day=Window(2, limits.daily_amount - 400_000))
    assert (daily.decision, daily.reasons) == (contracts.REJECT, (domain.DAILY_AMOUNT_EXCEEDED,))
    assert daily.signals["last_day"]["amount"] == "26000.00"  # before this one


# -- the customer's own history -----------------------------------------------------------


def test_paying_someone_new_is_a_small_signal():
    decision = assess(5_000, new_beneficiary=True)
    assert (decision.decision, decision.reasons) == (contracts.APPROVE, (domain.NEW_BENEFICIARY,))


def test_a_young_account_sending_most_of_its_limit_to_someone_new_is_held_for_review():
    decision = assess(60_000, account_opened_at=YOUNG, new_beneficiary=True)
    assert decision.decision == contracts.REVIEW
    assert decision.score == RULES.review_score
    assert set(decision.reasons) == {
        domain.NEW_ACCOUNT,
        domain.LARGE_AMOUNT,
        domain.NEW_BENEFICIARY,
    }


def test_an_hour_the_customer_never_sends_money_is_unusual():
    mornings = (9, 9, 10, 10, 10, 11, 9, 10, 11, 10)
    assert domain.hour_share_percent(10, mornings) == 100
    assert domain.hour_share_percent(12, mornings) == 20  # the two 11s are within an hour
    night = NOW.replace(hour=3)
    decision = assess(5_000, now=night, history_hours=mornings)
    assert decision.reasons == (domain.UNUSUAL_HOUR,)
    assert decision.signals["hour_share_percent"] == 0
    assert assess(5_000, now=NOW.replace(hour=10), history_hours=mornings).reasons == ()
    # Too little history to know what is usual: no judgement.
    assert assess(5_000, now=night, history_hours=mornings[:9]).reasons == ()


def test_the_hour_wraps_around_midnight():
    late = (23, 23, 0, 0, 23, 0, 23, 0, 23, 0)
    assert domain.hour_share_percent(1, late) == 50
    assert assess(5_000, now=NOW.replace(hour=1), history_hours=late).reasons == ()


def test_an_amount_far_above_the_customers_usual_is_a_spike():
    usual = (2_000, 2_500, 1_800, 2_200, 2_100, 1_900)  # about EUR 20
    spike = assess(50_000, history_amounts=usual)
    assert spike.reasons == (domain.AMOUNT_SPIKE,)
    assert spike.signals["amount_spike"]["median"] == "20.50"
    assert spike.signals["amount_spike"]["z"] >= RULES.spike_threshold
    assert assess(2_600, history_amounts=usual).reasons == ()
    # Below the minimum history there is nothing to compare with.
    assert assess(50_000, history_amounts=usual[:4]).reasons == ()
    assert assess(50_000, history_amounts=usual[:4]).signals["amount_spike"] is None


def test_identical_history_flags_real_jumps_not_every_cent():
    same = (20_000,) * 8  # EUR 200 each time
    assert assess(21_000, history_amounts=same).reasons == ()
    assert assess(40_000, history_amounts=same).reasons == (domain.AMOUNT_SPIKE,)


def test_pocket_money_never_spikes():
    coffee = (150, 200, 180, 170, 160)  # EUR 1.50 to 2.00
    below_floor = RULES.limits(None, "EUR").per_transfer * RULES.spike_min_limit_percent // 100
    assert assess(below_floor - 1, history_amounts=coffee).reasons == ()
    assert assess(below_floor, history_amounts=coffee).reasons == (domain.AMOUNT_SPIKE,)


def test_repeated_failed_logins_raise_the_customers_risk():
    threshold = RULES.failed_logins_threshold
    assert assess(5_000, failed_logins=threshold - 1).reasons == ()
    raised = assess(5_000, failed_logins=threshold)
    assert (raised.decision, raised.reasons) == (contracts.APPROVE, (domain.FAILED_LOGINS,))
    # With someone new on top, a transfer after a burst of failures is held.
    held = assess(5_000, failed_logins=threshold, new_beneficiary=True, account_opened_at=YOUNG)
    assert held.decision == contracts.REVIEW


# -- score and decision ------------------------------------------------------------------


def test_the_score_is_the_sum_of_the_weights_capped_at_100():
    assert domain.score([], RULES) == 0
    assert domain.score([domain.LARGE_AMOUNT, domain.NEW_ACCOUNT], RULES) == 40
    assert domain.score([domain.AMOUNT_OVER_LIMIT, domain.DAILY_COUNT_EXCEEDED], RULES) == 100
    everything = assess(
        EUR_LIMIT * 5,
        account_opened_at=YOUNG,
        last_day=Window(99, 99_000_000),
        last_hour=Window(99, 99_000_000),
    )
    assert everything.score == 100
    assert everything.reasons == (
        domain.AMOUNT_OVER_LIMIT,
        domain.NEW_ACCOUNT_LIMIT,
        domain.HOURLY_COUNT_EXCEEDED,
        domain.HOURLY_AMOUNT_EXCEEDED,
        domain.DAILY_COUNT_EXCEEDED,
        domain.DAILY_AMOUNT_EXCEEDED,
    )


def test_approve_below_review_below_reject():
    assert domain.decide(RULES.review_score - 1, RULES) == contracts.APPROVE
    assert domain.decide(RULES.review_score, RULES) == contracts.REVIEW
    assert domain.decide(RULES.reject_score - 1, RULES) == contracts.REVIEW
    assert domain.decide(RULES.reject_score, RULES) == contracts.REJECT
    no_review_band = replace(RULES, review_score=70, reject_score=70)
    assert {domain.decide(p, no_review_band) for p in range(101)} == {
        contracts.APPROVE,
        contracts.REJECT,
    }


def test_weights_are_data_too():
    heavier = replace(RULES, weights={**RULES.weights, domain.NEW_BENEFICIARY: 60})
    assert assess(5_000, new_beneficiary=True, rules=heavier).decision == contracts.REVIEW


def test_only_internal_transfers_and_payouts_are_assessed():
    assert domain.is_assessed(contracts.KIND_INTERNAL)
    assert domain.is_assessed(contracts.KIND_PAYOUT)
    assert not domain.is_assessed(contracts.KIND_DEPOSIT)
    assert not domain.is_assessed(None)


# -- documents ------------------------------------------------------------------------------


def test_the_default_rules_survive_a_round_trip_through_their_document():
    document = RULES.to_document()
    assert document["tiers"]["standard"]["currencies"]["JPY"]["per_transfer"] == "1500000"
    again = document_rules(document, version=7)
    assert again.to_document() == document
    assert again.version == 7


def test_weights_left_out_keep_their_defaults():
    document = RULES.to_document()
    document["weights"] = {domain.NEW_BENEFICIARY: 25}
    rules = document_rules(document)
    assert rules.weights[domain.NEW_BENEFICIARY] == 25
    assert rules.weights[domain.AMOUNT_OVER_LIMIT] == 100


def broken(change):
    document = copy.deepcopy(premium_document())
    change(document)
    return document


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(review_score=80), "review_score"),
        (lambda d: d.update(default_tier="gold"), "default_tier"),
        (lambda d: d["tiers"]["standard"]["currencies"].pop("JPY"), "tiers.standard.currencies"),
        (
            lambda d: d["tiers"]["premium"]["currencies"]["EUR"].update(per_transfer="1.001"),
            "tiers.premium.currencies.EUR.per_transfer",
        ),
        (
            lambda d: d["tiers"]["premium"]["currencies"]["EUR"].update(daily_amount="-5"),
            "tiers.premium.currencies.EUR.daily_amount",
        ),
    ],
)
def test_a_document_that_does_not_hold_together_names_the_field(change, where):
    with pytest.raises(domain.RuleError) as error:
        document_rules(broken(change))
    assert where in error.value.errors

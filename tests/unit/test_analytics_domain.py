"""analytics' rules as pure functions (services/analytics/domain.py)."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.analytics import domain
from services.analytics.domain import (
    AnomalySettings,
    CompletedTransfer,
    Flow,
    InsightSettings,
    Outflow,
)
from shared import contracts
from shared.config import ConfigError

SETTINGS = AnomalySettings()
INSIGHTS = InsightSettings()

# -- months ---------------------------------------------------------------------------


def test_months_are_utc_calendar_months():
    assert domain.month_of(datetime(2026, 3, 31, 23, 30, tzinfo=UTC)) == "2026-03"
    # 00:30 on April 1st in UTC+2 is still March in UTC.
    assert domain.month_of(datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-03"
    )
    assert domain.month_of(date(2026, 12, 5)) == "2026-12"
    with pytest.raises(ValueError):
        domain.month_of(datetime(2026, 3, 1))


def test_month_arithmetic_crosses_years():
    assert domain.previous_month("2026-01") == "2025-12"
    assert domain.shift_month("2025-11", 3) == "2026-02"
    assert domain.shift_month("2026-03", -11) == "2025-04"
    assert domain.month_name("2026-10") == "October"


@pytest.mark.parametrize("value", ["2026-01", "1999-12"])
def test_valid_months(value):
    assert domain.is_month(value)


@pytest.mark.parametrize(
    "value", ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "", None, 202601]
)
def test_invalid_months(value):
    assert not domain.is_month(value)


# -- categories -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "category"),
    [
        ("Rent March", "rent"),
        ("RENT 03/2026", "rent"),
        ("Salary October", "salary"),
        ("Lidl weekly shop", "groceries"),  # groceries comes before shopping
        ("Whole Foods", "groceries"),
        ("Electricity bill", "utilities"),
        ("Uber to airport", "transport"),
        ("Netflix", "subscriptions"),
        ("Pizza with friends", "dining"),
        ("Parrent", "other"),  # whole words only
        ("", "other"),
        (None, "other"),
    ],
)
def test_internal_transfers_are_categorised_from_their_reference(reference, category):
    assert domain.categorize(contracts.KIND_INTERNAL, reference) == category


def test_deposits_payouts_and_own_transfers_have_fixed_categories():
    assert domain.categorize(contracts.KIND_DEPOSIT, "rent") == domain.TOP_UP
    assert domain.categorize(contracts.KIND_PAYOUT, "rent") == domain.PAYOUT
    assert domain.categorize(contracts.KIND_INTERNAL, "rent", own_transfer=True) == (
        domain.OWN_TRANSFER
    )


def test_category_rules_are_data_with_unique_names():
    names = [name for name, _ in domain.CATEGORY_RULES]
    assert len(names) == len(set(names))
    assert not {domain.TOP_UP, domain.PAYOUT, domain.OWN_TRANSFER, domain.OTHER} & set(names)


# -- flows ----------------------------------------------------------------------------


def completed(kind, owner="u1", to_owner=None, amount=1000, reference=None, iban=None):
    return CompletedTransfer(
        transfer_id="t1",
        kind=kind,
        owner_id=owner,
        to_owner_id=to_owner,
        amount=amount,
        currency="EUR",
        reference=reference,
        from_account_id="a-from",
        to_account_id="a-to",
        beneficiary_iban=iban,
    )


def test_a_deposit_is_an_inflow_for_its_owner():
    assert domain.flows(completed(contracts.KIND_DEPOSIT)) == [
        Flow("u1", domain.IN, 1000, "EUR", domain.TOP_UP, None, None)
    ]


def test_an_internal_transfer_is_an_outflow_and_an_inflow():
    result = domain.flows(completed(contracts.KIND_INTERNAL, to_owner="u2", reference="Rent"))
    assert result == [
        Flow("u1", domain.OUT, 1000, "EUR", "rent", "account:a-to", "Rent"),
        Flow("u2", domain.IN, 1000, "EUR", "rent", "account:a-from", "Rent"),
    ]


def test_a_payout_is_an_outflow_to_the_beneficiary():
    result = domain.flows(completed(contracts.KIND_PAYOUT, iban="DE89370400440532013000"))
    assert result == [
        Flow("u1", domain.OUT, 1000, "EUR", domain.PAYOUT, "iban:DE89370400440532013000", None)
    ]


def test_moving_money_between_own_accounts_counts_once_and_nets_to_zero():
    result = domain.flows(completed(contracts.KIND_INTERNAL, to_owner="u1", reference="Rent"))
    assert {flow.category for flow in result} == {domain.OWN_TRANSFER}
    assert domain.contributions(result) == [
        domain.Contribution("u1", "EUR", domain.OWN_TRANSFER, inflow=1000, outflow=1000, count=1)
    ]
    assert not domain.is_spending(domain.OWN_TRANSFER)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        domain.flows(completed("refund"))


# -- anomalies ------------------------------------------------------------------------


def test_median_and_mad_of_a_crafted_history():
    assert domain.median_and_mad([10, 20, 30, 40, 1000]) == (30.0, 10.0)
    assert domain.median_and_mad([1, 2, 3, 4]) == (2.5, 1.0)


def test_an_outflow_far_above_a_varied_history_is_flagged_with_a_readable_reason():
    history = [1_800, 2_000, 2_100, 1_900, 2_200, 2_000, 2_050]  # about EUR 20
    anomaly = domain.detect_anomaly(50_000, "EUR", history, SETTINGS)
    assert anomaly is not None
    # median 2000, MAD 100 -> spread max(148.26, 200 (10% of the median)) = 200
    assert anomaly.median == 2_000
    assert anomaly.score == pytest.approx((50_000 - 2_000) / 200, abs=0.01)
    assert anomaly.reason.startswith("amount 25x your usual 20.00 EUR")
    assert "last 7 payments" in anomaly.reason


def test_a_usual_amount_is_not_flagged():
    history = [1_800, 2_000, 2_100, 1_900, 2_200, 2_000]
    assert domain.detect_anomaly(2_300, "EUR", history, SETTINGS) is None
    assert domain.detect_anomaly(100, "EUR", history, SETTINGS) is None  # small: never flagged


def test_too_little_history_flags_nothing():
    assert domain.detect_anomaly(1_000_000, "EUR", [2_000] * 4, SETTINGS) is None
    assert domain.detect_anomaly(1_000_000, "EUR", [], SETTINGS) is None
    assert domain.detect_anomaly(1_000_000, "EUR", [2_000] * 5, SETTINGS) is not None


def test_a_mad_of_zero_uses_the_minimum_spread_instead_of_dividing_by_zero():
    history = [2_000] * 8  # MAD 0: identical payments
    score = domain.robust_score(2_010, history)
    assert score.mad == 0
    assert score.spread == 200  # 10% of the median
    assert domain.detect_anomaly(2_010, "EUR", history, SETTINGS) is None  # a cent is no anomaly
    assert domain.detect_anomaly(2_500, "EUR", history, SETTINGS) is None  # score 2.5
    flagged = domain.detect_anomaly(3_000, "EUR", history, SETTINGS)  # score 5
    assert flagged is not None
    assert flagged.score == 5.0
    assert flagged.reason.startswith("amount 1.5x your usual 20.00 EUR")


def test_the_spread_is_at_least_one_minor_unit():
    # 10% of a 1-yen median is less than one yen: the floor keeps it finite.
    score = domain.robust_score(100, [1, 1, 1, 1, 1])
    assert score.spread == 1.0
    assert score.score == 99.0


def test_only_the_newest_history_counts():
    old_big = [100_000] * 10
    recent_small = [1_000] * 5
    settings = AnomalySettings(history=5)
    assert domain.detect_anomaly(50_000, "EUR", old_big + recent_small, settings) is not None
    assert domain.detect_anomaly(50_000, "EUR", recent_small + old_big, settings) is None


def test_anomaly_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANALYTICS_ANOMALY_THRESHOLD", "5")
    monkeypatch.setenv("ANALYTICS_ANOMALY_MIN_HISTORY", "8")
    settings = AnomalySettings.from_env()
    assert (settings.threshold, settings.min_history, settings.history) == (5.0, 8, 100)
    monkeypatch.setenv("ANALYTICS_ANOMALY_THRESHOLD", "high")
    with pytest.raises(ConfigError, match="ANALYTICS_ANOMALY_THRESHOLD"):
        AnomalySettings.from_env()
    monkeypatch.setenv("ANALYTICS_ANOMALY_THRESHOLD", "0")
    with pytest.raises(ConfigError):
        AnomalySettings.from_env()


# -- insights -------------------------------------------------------------------------


def test_spending_up_on_last_month():
    insight = domain.spending_change("2026-11", "EUR", 42_000, 30_000, INSIGHTS)
    assert insight.kind == domain.SPENDING_CHANGE
    assert insight.message.startswith("Spending is up 40% on October")
    assert insight.data["change_percent"] == 40
    assert insight.data["spending"] == "420.00"
    assert insight.data["previous_spending"] == "300.00"
    assert insight.data["previous_month"] == "2026-10"


def test_spending_down_and_the_threshold():
    down = domain.spending_change("2026-01", "EUR", 7_500, 10_000, INSIGHTS)
    assert down.message.startswith("Spending is down 25% on December")
    assert down.data["change_percent"] == -25
    assert domain.spending_change("2026-01", "EUR", 12_000, 10_000, INSIGHTS) is not None  # 20%
    assert domain.spending_change("2026-01", "EUR", 11_999, 10_000, INSIGHTS) is None
    assert domain.spending_change("2026-01", "EUR", 10_000, 0, INSIGHTS) is None
    assert domain.spending_change("2026-01", "EUR", 0, 10_000, INSIGHTS) is None


def outflow(n, month, amount, reference=None, counterparty=None, currency="EUR"):
    return Outflow(
        transfer_id=f"t{n}",
        month=month,
        amount=amount,
        currency=currency,
        category=domain.category_of_reference(reference),
        reference=reference,
        counterparty=counterparty,
        position=n,
    )


def test_the_largest_outflow_of_the_month_per_currency():
    items = [
        outflow(1, "2026-11", 5_000, "Groceries"),
        outflow(2, "2026-11", 85_000, "Rent November"),
        outflow(3, "2026-10", 99_000, "Rent October"),  # another month
        outflow(4, "2026-11", 3_000, currency="USD"),
    ]
    result = domain.largest_outflows("2026-11", items)
    assert [i.data["transfer_id"] for i in result] == ["t2", "t4"]
    assert result[0].message == "Your largest payment in November was 850.00 EUR (Rent November)"
    assert result[0].data["category"] == "rent"


def test_recurring_payments_by_counterparty_in_three_months():
    items = [
        outflow(1, "2026-09", 85_000, "Flat", "account:landlord"),
        outflow(2, "2026-10", 85_000, "Flat", "account:landlord"),
        outflow(3, "2026-11", 86_000, "Flat", "account:landlord"),
        outflow(4, "2026-11", 2_000, "Coffee", "account:cafe"),
    ]
    [insight] = domain.recurring_payments(items, INSIGHTS)  # "Flat" by reference: same payments
    assert insight.kind == domain.RECURRING_PAYMENT
    assert insight.data["matched_by"] == "counterparty"
    assert insight.data["counterparty"] == "account:landlord"
    assert insight.data["months"] == ["2026-09", "2026-10", "2026-11"]
    assert insight.data["typical_amount"] == "850.00"
    assert insight.message == "Recurring payment: Flat, about 850.00 EUR a month (seen in 3 months)"


def test_recurring_payments_by_reference_ignore_dates_in_it():
    items = [
        outflow(1, "2026-08", 1_299, "Netflix Aug 2026", "iban:A"),
        outflow(2, "2026-09", 1_299, "Netflix September 2026", "iban:B"),
        outflow(3, "2026-10", 1_399, "Netflix 10/2026", "iban:C"),
    ]
    [insight] = domain.recurring_payments(items, INSIGHTS)
    assert insight.data["matched_by"] == "reference"
    assert insight.data["count"] == 3
    assert domain.reference_key("Netflix 10/2026") == "netflix"


def test_not_recurring_in_two_months_or_with_different_amounts():
    two_months = [
        outflow(1, "2026-09", 85_000, "Rent"),
        outflow(2, "2026-10", 85_000, "Rent"),
        outflow(3, "2026-10", 85_000, "Rent"),
    ]
    assert domain.recurring_payments(two_months, INSIGHTS) == []
    different = [
        outflow(1, "2026-08", 1_000, "Amazon"),
        outflow(2, "2026-09", 25_000, "Amazon"),
        outflow(3, "2026-10", 4_000, "Amazon"),
    ]
    assert domain.recurring_payments(different, INSIGHTS) == []


def test_insights_combine_change_largest_and_recurring():
    items = [
        outflow(1, "2026-09", 50_000, "Rent", "account:l"),
        outflow(2, "2026-10", 50_000, "Rent", "account:l"),
        outflow(3, "2026-11", 50_000, "Rent", "account:l"),
        outflow(4, "2026-11", 20_000, "Flight"),
    ]
    spending = {("2026-11", "EUR"): 70_000, ("2026-10", "EUR"): 50_000}
    result = domain.insights("2026-11", spending, items)
    assert [i.kind for i in result] == [
        domain.SPENDING_CHANGE,
        domain.LARGEST_OUTFLOW,
        domain.RECURRING_PAYMENT,
    ]
    assert result[0].message.startswith("Spending is up 40% on October")
    assert result[0].as_dict()["data"]["currency"] == "EUR"

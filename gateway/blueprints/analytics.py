"""/v1/analytics: the caller's monthly summary, insights and unusual outflows.

Amounts are decimal strings in the currency's minor digits, as everywhere
in the API. Months are UTC calendar months.
"""

from datetime import UTC, datetime

from marshmallow import Schema, fields, validate

from gateway.bodies import Blueprint
from gateway.extensions import authenticated, platform, principal
from gateway.schemas import Pattern
from shared.money import format_minor, is_supported_currency

blp = Blueprint("analytics", __name__, description="Spending summaries, insights and anomalies")

BEARER = [{"bearerAuth": []}]
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


# -- schemas ----------------------------------------------------------------------


class AnalyticsSummaryQuery(Schema):
    month = fields.String(
        load_default=None,
        validate=Pattern(MONTH_PATTERN, error="Must be a month, YYYY-MM."),
        metadata={"description": "YYYY-MM (UTC); the current month when absent."},
    )


class AnalyticsCategoryTotals(Schema):
    inflow = fields.String(metadata={"example": "0.00"})
    outflow = fields.String(metadata={"example": "850.00"})
    net = fields.String(metadata={"example": "-850.00"})
    count = fields.Integer()


class AnalyticsCurrencyTotals(AnalyticsCategoryTotals):
    by_category = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(AnalyticsCategoryTotals),
        metadata={
            "description": "Per category: rent, groceries, salary, utilities, transport, ..., "
            "top-up (deposits), payout, own-transfer (between the caller's accounts), other."
        },
    )


class AnalyticsSummaryResponse(Schema):
    month = fields.String(metadata={"example": "2026-11"})
    currencies = fields.Dict(
        keys=fields.String(metadata={"description": "ISO 4217 code"}),
        values=fields.Nested(AnalyticsCurrencyTotals),
        metadata={"description": "Totals per currency; empty when nothing moved that month."},
    )


class AnalyticsInsight(Schema):
    kind = fields.String(
        metadata={"description": "spending_change | largest_outflow | recurring_payment"}
    )
    message = fields.String(metadata={"example": "Spending is up 40% on October"})
    data = fields.Dict(metadata={"description": "The figures behind the message, per kind."})


class AnalyticsInsightsResponse(Schema):
    items = fields.List(fields.Nested(AnalyticsInsight))


class AnalyticsAnomaliesQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class AnalyticsAnomaly(Schema):
    transfer_id = fields.String()
    score = fields.Float(metadata={"description": "Robust z-score against earlier outflows."})
    reason = fields.String(metadata={"example": "amount 25x your usual 20.00 EUR"})
    amount = fields.String()
    currency = fields.String()
    usual_amount = fields.String(metadata={"description": "The median of earlier outflows."})
    month = fields.String()
    occurred_at = fields.String()


class AnalyticsAnomaliesResponse(Schema):
    items = fields.List(fields.Nested(AnalyticsAnomaly))


# -- views ------------------------------------------------------------------------


def _money(minor: int, currency: str) -> str:
    return format_minor(minor, currency) if is_supported_currency(currency) else str(minor)


def _totals(totals: dict, currency: str) -> dict:
    return {
        "inflow": _money(totals["inflow"], currency),
        "outflow": _money(totals["outflow"], currency),
        "net": _money(totals["net"], currency),
        "count": totals["count"],
    }


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


@blp.route("/v1/analytics/summary", methods=["GET"])
@authenticated
@blp.arguments(AnalyticsSummaryQuery(), location="query")
@blp.response(200, AnalyticsSummaryResponse)
@blp.doc(security=BEARER)
def summary(query):
    caller = principal()
    month = query["month"] or current_month()
    with platform().rpc.client() as rpc:
        result = rpc.analytics.summary(caller.user_id, month)
    return {
        "month": result["month"],
        "currencies": {
            currency: {
                **_totals(totals, currency),
                "by_category": {
                    category: _totals(values, currency)
                    for category, values in totals["by_category"].items()
                },
            }
            for currency, totals in result["currencies"].items()
        },
    }


@blp.route("/v1/analytics/insights", methods=["GET"])
@authenticated
@blp.response(200, AnalyticsInsightsResponse)
@blp.doc(security=BEARER)
def insights():
    caller = principal()
    with platform().rpc.client() as rpc:
        return {"items": rpc.analytics.insights(caller.user_id)}


@blp.route("/v1/analytics/anomalies", methods=["GET"])
@authenticated
@blp.arguments(AnalyticsAnomaliesQuery(), location="query")
@blp.response(200, AnalyticsAnomaliesResponse)
@blp.doc(security=BEARER)
def anomalies(query):
    caller = principal()
    with platform().rpc.client() as rpc:
        items = rpc.analytics.anomalies(caller.user_id, query["limit"])
    return {
        "items": [
            {
                **item,
                "amount": _money(item["amount"], item["currency"]),
                "usual_amount": _money(item["usual_amount"], item["currency"]),
            }
            for item in items
        ]
    }

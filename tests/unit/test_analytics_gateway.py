"""/v1/analytics in the gateway, with the analytics service faked (no broker)."""

import pytest

from gateway.blueprints import analytics
from shared.errors import InvalidInput
from tests.unit.helpers import FakeServices, gateway_app

USER = "2f1c1a52-8d7e-4c41-9a3e-2b1f0c6f7a10"


class FakeAnalytics:
    def __init__(self):
        self.calls = []
        self.error = None

    def summary(self, user_id, month):
        self.calls.append(("summary", user_id, month))
        if self.error:
            raise self.error
        return {
            "month": month,
            "currencies": {
                "EUR": {
                    "inflow": 200_000,
                    "outflow": 85_050,
                    "net": 114_950,
                    "count": 3,
                    "by_category": {
                        "rent": {"inflow": 0, "outflow": 85_000, "net": -85_000, "count": 1},
                        "other": {"inflow": 0, "outflow": 50, "net": -50, "count": 1},
                        "top-up": {"inflow": 200_000, "outflow": 0, "net": 200_000, "count": 1},
                    },
                },
                "JPY": {"inflow": 500, "outflow": 0, "net": 500, "count": 1, "by_category": {}},
            },
        }

    def insights(self, user_id):
        self.calls.append(("insights", user_id))
        return [
            {
                "kind": "spending_change",
                "message": "Spending is up 40% on October",
                "data": {"currency": "EUR", "change_percent": 40},
            }
        ]

    def anomalies(self, user_id, limit):
        self.calls.append(("anomalies", user_id, limit))
        return [
            {
                "transfer_id": "7d4b8f0e-1111-4c41-9a3e-2b1f0c6f7a10",
                "score": 240.0,
                "reason": "amount 25x your usual 20.00 EUR",
                "amount": 50_000,
                "currency": "EUR",
                "usual_amount": 2_000,
                "month": "2026-11",
                "occurred_at": "2026-11-10T12:00:00+00:00",
            }
        ]


@pytest.fixture
def fake():
    return FakeServices(analytics=FakeAnalytics())


@pytest.fixture
def client(fake):
    return gateway_app(rpc=fake, test_principal=True).test_client()


AS_USER = {"X-Test-User": USER}


def test_summary_amounts_are_decimal_strings_per_currency(client, fake):
    response = client.get("/v1/analytics/summary?month=2026-11", headers=AS_USER)
    assert response.status_code == 200
    assert response.get_json() == {
        "month": "2026-11",
        "currencies": {
            "EUR": {
                "inflow": "2000.00",
                "outflow": "850.50",
                "net": "1149.50",
                "count": 3,
                "by_category": {
                    "rent": {"inflow": "0.00", "outflow": "850.00", "net": "-850.00", "count": 1},
                    "other": {"inflow": "0.00", "outflow": "0.50", "net": "-0.50", "count": 1},
                    "top-up": {
                        "inflow": "2000.00",
                        "outflow": "0.00",
                        "net": "2000.00",
                        "count": 1,
                    },
                },
            },
            "JPY": {"inflow": "500", "outflow": "0", "net": "500", "count": 1, "by_category": {}},
        },
    }
    assert fake.analytics.calls == [("summary", USER, "2026-11")]


def test_summary_defaults_to_the_current_month(client, fake):
    assert client.get("/v1/analytics/summary", headers=AS_USER).status_code == 200
    assert fake.analytics.calls == [("summary", USER, analytics.current_month())]


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "november", "2026-11-01"])
def test_a_bad_month_is_422_problem_json(client, fake, month):
    response = client.get(f"/v1/analytics/summary?month={month}", headers=AS_USER)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert fake.analytics.calls == []


def test_a_service_side_invalid_input_is_422(client, fake):
    fake.analytics.error = InvalidInput("invalid_input", "Invalid value for month.", {})
    response = client.get("/v1/analytics/summary?month=2026-11", headers=AS_USER)
    assert response.status_code == 422
    assert response.get_json()["code"] == "invalid_input"


def test_insights(client, fake):
    response = client.get("/v1/analytics/insights", headers=AS_USER)
    assert response.status_code == 200
    assert response.get_json() == {
        "items": [
            {
                "kind": "spending_change",
                "message": "Spending is up 40% on October",
                "data": {"currency": "EUR", "change_percent": 40},
            }
        ]
    }
    assert fake.analytics.calls == [("insights", USER)]


def test_anomalies(client, fake):
    response = client.get("/v1/analytics/anomalies?limit=5", headers=AS_USER)
    assert response.status_code == 200
    [item] = response.get_json()["items"]
    assert item["transfer_id"] == "7d4b8f0e-1111-4c41-9a3e-2b1f0c6f7a10"
    assert item["score"] == 240.0
    assert item["reason"] == "amount 25x your usual 20.00 EUR"
    assert (item["amount"], item["usual_amount"], item["currency"]) == ("500.00", "20.00", "EUR")
    assert fake.analytics.calls == [("anomalies", USER, 5)]
    assert client.get("/v1/analytics/anomalies?limit=0", headers=AS_USER).status_code == 422


@pytest.mark.parametrize("path", ["summary", "insights", "anomalies"])
def test_every_endpoint_needs_a_token(client, fake, path):
    response = client.get(f"/v1/analytics/{path}?month=bad")
    assert response.status_code == 401  # before the query is validated
    assert fake.analytics.calls == []


def test_the_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/v1/analytics/summary", "/v1/analytics/insights", "/v1/analytics/anomalies"} <= set(
        paths
    )

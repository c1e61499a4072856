"""Analytics over HTTP: the month's totals follow real transfers through the saga."""

import time

from tests.e2e.helpers import Customer, assert_problem


def summary(customer):
    response = customer.api.get("/v1/analytics/summary", token=customer.token)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_monthly_summary_follows_completed_transfers(api):
    alice, bob = Customer(api), Customer(api)
    source, target = alice.funded("100.00"), bob.open()
    transfer_id = alice.start(
        "/v1/transfers",
        {
            "from_account_id": source,
            "to_account_id": target,
            "amount": "30.50",
            "currency": "EUR",
            "reference": "Rent November",
        },
    )
    assert alice.settled(transfer_id)["status"] == "completed"
    deadline = time.monotonic() + 15  # analytics is fed by events: eventually consistent
    while time.monotonic() < deadline:
        eur = summary(alice)["currencies"].get("EUR", {})
        if eur.get("count") == 2:
            break
        time.sleep(0.2)
    assert (eur["inflow"], eur["outflow"], eur["net"]) == ("100.00", "30.50", "69.50")
    assert eur["by_category"]["rent"]["outflow"] == "30.50"
    assert summary(bob)["currencies"]["EUR"]["inflow"] == "30.50"
    assert_problem(api.get("/v1/analytics/summary?month=2026-13", token=alice.token), 422)
    assert api.get("/v1/analytics/insights", token=alice.token).status_code == 200
    assert api.get("/v1/analytics/anomalies", token=alice.token).json() == {"items": []}

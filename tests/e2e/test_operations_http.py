"""GET /v1/admin/services: what an operator sees of the running platform."""

import time

import pytest

from tests.e2e.helpers import assert_problem, make_admin, signed_up

PATH = "/v1/admin/services"
PLATFORM = ["accounts", "analytics", "auth", "notifications", "payments", "risk", "transactions"]
# Not needed by the other tests here, and it is restarted before the module ends.
VICTIM = "analytics"


@pytest.fixture(scope="module")
def admin_token(api):
    return make_admin(api)[1]


def services_once(api, token, until, timeout):
    """The listing, by service, once `until(listing)` holds (or the last one seen)."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(PATH, token=token)
        assert response.status_code == 200, response.text
        listing = {item["service"]: item for item in response.json()["items"]}
        if until(listing) or time.monotonic() > deadline:
            return listing
        time.sleep(0.5)


def all_up(listing):
    return all(
        item["healthy"]
        and item["instances"] >= 1
        and any(instance["ready"] for instance in item["instance_details"])
        for item in listing.values()
    )


def test_listing_services_needs_a_valid_token(api):
    assert_problem(api.get(PATH), 401, "missing_token")
    assert_problem(api.get(PATH, token="not.a.jwt"), 401)


def test_a_customer_may_not_list_services(api):
    _, tokens = signed_up(api)
    assert_problem(api.get(PATH, token=tokens["access_token"]), 403, "forbidden")


def test_an_admin_sees_every_service_running_and_healthy(api, admin_token):
    response = api.get(PATH, token=admin_token)
    assert response.status_code == 200, response.text
    assert [item["service"] for item in response.json()["items"]] == PLATFORM  # sorted by name
    # /health/ready (what the fixture waited for) does not cover every service.
    listing = services_once(api, admin_token, all_up, timeout=60)
    for item in listing.values():
        assert item["instances"] >= 1, item
        assert (item["healthy"], item["status"]) == (True, "ok"), item
        # Each instance by its own heartbeat: it reaches the broker and its database.
        [instance] = item["instance_details"]
        assert instance["ready"] is True, item
        assert instance["checks"] == {"database": "ok"}, item
        assert instance["seconds_since_heartbeat"] < 15, item


def test_a_killed_service_has_no_instances_and_is_unhealthy(api, admin_token):
    services_once(api, admin_token, all_up, timeout=60)
    api.kill(VICTIM)
    try:
        listing = services_once(
            api, admin_token, lambda listing: listing[VICTIM]["instances"] == 0, timeout=10
        )
        down = listing[VICTIM]
        assert down["instances"] == 0, down
        # Its heartbeat stops: gone from the list after three missed intervals.
        listing = services_once(
            api, admin_token, lambda listing: not listing[VICTIM]["instance_details"], timeout=20
        )
        assert listing[VICTIM]["instance_details"] == [], listing[VICTIM]
        assert down["healthy"] is False, down
        # Its durable queue outlives it: the health() call waits there, unanswered.
        assert down["status"] == "service_timeout", down
        assert all(item["healthy"] for name, item in listing.items() if name != VICTIM), listing
    finally:
        api.restart_service(VICTIM)
    back = services_once(api, admin_token, all_up, timeout=60)
    assert back[VICTIM]["instances"] == 1, back[VICTIM]
    assert back[VICTIM]["healthy"] is True, back[VICTIM]

"""GET /v1/admin/audit on the real platform: auth's and risk's trails as one,
newest first, each entry naming the broker identity and the admin who acted,
paged without repeating or skipping an entry."""

from datetime import datetime

import pytest

from shared import broker
from tests.e2e.helpers import Customer, assert_problem, make_admin

AUDIT = "/v1/admin/audit"


@pytest.fixture(scope="module")
def admin(api):
    return make_admin(api)


def walk(api, token, query=""):
    """Every entry, page by page (3 at a time), and the number of pages."""
    items, cursor, pages = [], None, 0
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        response = api.get(f"{AUDIT}?limit=3{query}{suffix}", token=token)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


def test_the_trail_shows_who_granted_a_role_and_who_changed_a_tier(api, admin):
    user, token = admin
    alice = Customer(api)
    changed = api.put(
        f"/v1/admin/risk/customers/{alice.user['user_id']}", token=token, json={"tier": "standard"}
    )
    assert changed.status_code == 200, changed.text

    newest = api.get(f"{AUDIT}?limit=200", token=token).json()["items"]
    tier = next(e for e in newest if e["subject"] == alice.user["user_id"])
    grant = next(e for e in newest if e["subject"] == user["user_id"])
    assert (tier["service"], tier["action"]) == ("risk", "customer_tier_changed")
    # Through the gateway, on behalf of the admin named by their token. The
    # broker identities are the URI's one user here; each their own under
    # TLS (tests/e2e/test_broker_identities.py).
    uri = api.env["AMQP_URI"]
    gateway, operator = (broker.access(i, uri).identity for i in (broker.GATEWAY, broker.OPERATOR))
    assert (tier["actor_identity"], tier["actor_user_id"]) == (gateway, user["user_id"])
    assert tier["details"] == {"tier": "standard", "previous_tier": None}
    assert (grant["service"], grant["action"]) == ("auth", "role_granted")
    # Roles are granted by operators over RPC (make_admin), never over HTTP.
    assert grant["actor_identity"] == operator
    assert grant["details"]["role"] == "admin"
    assert newest.index(tier) < newest.index(grant)  # newest first


def test_pages_of_the_merged_trail_repeat_and_skip_nothing(api, admin):
    _, token = admin
    # Entries in both trails, interleaved in time.
    for _ in range(2):
        customer = Customer(api)
        make_admin(api)
        api.put(
            f"/v1/admin/risk/customers/{customer.user['user_id']}",
            token=token,
            json={"tier": "standard"},
        )
    merged, pages = walk(api, token)
    assert pages > 1
    ids = [entry["entry_id"] for entry in merged]
    assert len(ids) == len(set(ids))
    times = [datetime.fromisoformat(entry["at"]) for entry in merged]
    assert times == sorted(times, reverse=True)
    auth, _ = walk(api, token, "&service=auth")
    risk, _ = walk(api, token, "&service=risk")
    assert {e["service"] for e in auth} == {"auth"} and {e["service"] for e in risk} == {"risk"}
    # Nothing was audited meanwhile: the merged trail is exactly the two.
    assert sorted(ids) == sorted(e["entry_id"] for e in auth + risk)

    tiers, _ = walk(api, token, "&action=customer_tier_changed")
    assert tiers and {e["action"] for e in tiers} == {"customer_tier_changed"}


def test_only_admins_read_the_trail_and_bad_queries_are_clear(api, admin):
    _, token = admin
    assert_problem(api.get(AUDIT), 401)
    assert_problem(api.get(AUDIT, token=Customer(api).token), 403, "forbidden")
    assert_problem(api.get(f"{AUDIT}?cursor=not-a-cursor", token=token), 400, "invalid_cursor")
    assert_problem(api.get(f"{AUDIT}?service=payments", token=token), 422)
    assert_problem(api.get(f"{AUDIT}?limit=0", token=token), 422)

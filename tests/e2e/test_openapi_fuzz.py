"""/openapi.json against the gateway it describes, fuzzed with schemathesis.

Every operation of the document is sent what the document allows and what it
does not, on the running platform, as a customer (the admin operations as an
admin). Every answer must be what the document says: not a 5xx, a status it
lists, with its content type and a body its schema accepts. And what the
document rules out must be refused, so it claims no rule the gateway does
not keep.

Bounded for `make test`: a few examples per operation, the same ones every
run. `make fuzz` sends many more, new ones each run (FUZZ_MAX_EXAMPLES,
FUZZ_SEED).
"""

import os
import time

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.helpers import Customer, login, make_admin

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
SEED = os.environ.get("FUZZ_SEED")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class Caller:
    """A user's bearer header, logged in again when its token is about to
    expire (access tokens live minutes; `make fuzz` runs longer)."""

    def __init__(self, api, user):
        self.api, self.user = api, user
        self._token, self._expires = None, 0.0

    def token(self) -> str:
        if time.monotonic() > self._expires - 30:
            tokens = login(self.api, self.user)
            self._token = tokens["access_token"]
            self._expires = time.monotonic() + tokens["expires_in"]
        return self._token

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def new_session_headers(self) -> dict:
        return {"Authorization": f"Bearer {login(self.api, self.user)['access_token']}"}


@pytest.fixture(scope="module")
def callers(api):
    """A customer with an account, and an admin."""
    customer = Customer(api)
    customer.open()
    admin, _ = make_admin(api)
    admin = Caller(api, admin)
    yield {"customer": Caller(api, customer.user), "admin": admin}
    # The platform is every end-to-end test's: leave no reconciliation run
    # going (a test starting one would be answered 409).
    _wait_for_reconciliation(api, admin.token())


def _wait_for_reconciliation(api, admin_token, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        overview = api.get("/v1/admin/reconciliation", token=admin_token, params={"limit": 1})
        if all(run["status"] != "running" for run in overview.json()["runs"]):
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def openapi(api, callers):
    config = {
        "base-url": api.base_url,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": SEED is None,
            "database": "none",  # nothing written to .hypothesis/
            # Our bearer token goes on every request (below), not a made-up one.
            "with-security-parameters": False,
        },
        # Operations one by one: no chains of calls, which would take minutes.
        "phases": {"stateful": {"enabled": False}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    }
    if SEED is not None:
        config["seed"] = int(SEED)
    return schemathesis.openapi.from_url(
        api.base_url + "/openapi.json", config=SchemathesisConfig.from_dict(config)
    )


schema = schemathesis.pytest.from_fixture("openapi")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4.32.5's from_fixture reads Node._nodeid, which pytest 9.2
    # no longer has (it names each operation's subtest with it).
    request.node._nodeid = request.node.nodeid


# Every operation is fuzzed. The webhook answers its refusals (no provider,
# no signature) and nothing past them: a signature cannot be guessed.
@schema.parametrize()
def test_the_gateway_answers_as_its_openapi_document_says(case, callers):
    if case.operation.path.startswith("/v1/admin/"):
        headers = callers["admin"].headers()
    elif case.operation.path == "/v1/auth/logout":
        # A session of its own to end: the customer's must outlive the run.
        headers = callers["customer"].new_session_headers()
    else:
        headers = callers["customer"].headers()
    response = case.call(headers=headers, timeout=30)
    if response.status_code == 414:
        # Not the document's to describe: gunicorn refuses a request line
        # over 4094 bytes (its limit_request_line; negative cases repeat a
        # query parameter a hundred times) with an HTML page of its own,
        # before the gateway's app sees the request.
        return
    case.validate_response(response, checks=CHECKS, headers=headers)

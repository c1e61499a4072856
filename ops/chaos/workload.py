"""Customers who keep moving money through the gateway, as a good client does.

Every POST carries an Idempotency-Key, and a 503, a refused or broken
connection or a timeout is retried with the SAME key until the gateway
answers: a transfer is started once however often it is asked for. Any
other 5xx is the platform's failure: it is recorded (and retried, so the
workload goes on). Counts go to the phase the suite names as current.
"""

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests

from tests.e2e.helpers import FAILING_IBAN, GOOD_IBAN, Customer

TIMEOUT = 10  # seconds a request may take before it counts as lost
GIVE_UP = 120  # seconds a request is retried before the workload reports it


@dataclass
class Counts:
    requests: int = 0
    unavailable: int = 0  # 503s
    retries: int = 0
    failures: list[str] = field(default_factory=list)  # 5xx other than 503, and give-ups


class Phases:
    """Counts per phase of the run (a fault, or the calm between faults)."""

    def __init__(self):
        self.current = "warm-up"
        self.counts: dict[str, Counts] = {}
        self._lock = threading.Lock()

    def record(self, **increments) -> None:
        with self._lock:
            counts = self.counts.setdefault(self.current, Counts())
            for name, value in increments.items():
                if name == "failure":
                    counts.failures.append(value)
                else:
                    setattr(counts, name, getattr(counts, name) + value)


class PatientClient:
    """One customer's HTTP session that retries what a good client retries."""

    def __init__(self, base_url: str, customer: Customer, phases: Phases):
        self.base_url = base_url
        self.user, self.token = customer.user, customer.token
        self.phases = phases
        self.session = requests.Session()

    def send(self, method: str, path: str, *, body=None, key=None, params=None):
        headers = {"Idempotency-Key": key} if key else {}
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    json=body,
                    params=params,
                    headers={**headers, "Authorization": f"Bearer {self.token}"},
                    timeout=TIMEOUT,
                )
            except requests.RequestException:
                self.phases.record(retries=1)
                time.sleep(0.2)
                continue
            self.phases.record(requests=1)
            if response.status_code == 401 and path != "/v1/auth/login":
                self._log_in_again()  # access tokens last minutes; the run may not
                continue
            if response.status_code == 503:
                self.phases.record(unavailable=1, retries=1)
                time.sleep(min(float(response.headers.get("Retry-After", 1)), 1.0))
                continue
            if response.status_code >= 500:
                self.phases.record(
                    retries=1,
                    failure=f"{method} {path}: {response.status_code} {response.text[:300]}",
                )
                time.sleep(0.2)
                continue
            return response
        self.phases.record(failure=f"{method} {path}: no answer within {GIVE_UP} s")
        return None

    def _log_in_again(self) -> None:
        credentials = {"email": self.user["email"], "password": self.user["password"]}
        response = self.send("POST", "/v1/auth/login", body=credentials)
        if response is not None and response.status_code == 200:
            self.token = response.json()["access_token"]

    def start_transfer(self, path: str, body: dict) -> str | None:
        """The id of a transfer the gateway accepted (one key for every try)."""
        response = self.send("POST", path, body=body, key=str(uuid.uuid4()))
        if response is None:
            return None
        if response.status_code not in (201, 202):
            self.phases.record(failure=f"POST {path}: {response.status_code} {response.text[:300]}")
            return None
        return response.json()["transfer_id"]

    def transfer_status(self, transfer_id: str) -> str | None:
        response = self.send("GET", f"/v1/transfers/{transfer_id}")
        return response.json()["status"] if response is not None else None

    def transfers(self) -> list[dict]:
        """Every transfer this customer started, page by page."""
        views, cursor = [], None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            response = self.send("GET", "/v1/transfers", params=params)
            if response is None:
                raise PlatformSilent("GET /v1/transfers: no answer but 503s and timeouts")
            page = response.json()
            views += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return views


class PlatformSilent(RuntimeError):
    """The platform answered nothing but 503s and timeouts for GIVE_UP seconds."""


def run_customer(client: PatientClient, own: str, others: list[str], stop, started, seed: int):
    """Deposits, transfers to others and payouts (some to an IBAN the provider
    refuses), until `stop` is set; each accepted transfer id goes to `started`."""
    rng = random.Random(seed)
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.6:
            path, body = (
                "/v1/transfers",
                {
                    "from_account_id": own,
                    "to_account_id": rng.choice(others),
                    "amount": f"{rng.randint(1, 300) / 100:.2f}",
                    "currency": "EUR",
                },
            )
        elif roll < 0.8:
            path, body = (
                "/v1/deposits",
                {
                    "account_id": own,
                    "amount": "1.00",
                    "currency": "EUR",
                    "source": {"type": "card", "token": "tok_ok"},
                },
            )
        else:
            iban = FAILING_IBAN if roll < 0.85 else GOOD_IBAN
            path, body = (
                "/v1/payouts",
                {
                    "from_account_id": own,
                    "amount": "0.50",
                    "currency": "EUR",
                    "beneficiary": {"name": "Landlord", "iban": iban},
                },
            )
        transfer_id = client.start_transfer(path, body)
        if transfer_id is not None:
            started.append(transfer_id)
        time.sleep(rng.uniform(0.05, 0.25))  # people, not a benchmark

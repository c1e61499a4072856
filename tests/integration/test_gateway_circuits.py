"""The gateway's circuit breaker per service, against the real broker:
a service that keeps failing is refused at once for a while, one whose
answers are business errors is not, and a trial call after the pause
closes the circuit again (gateway/rpc.py ServiceCircuits)."""

import threading
import time
import urllib.parse

import pytest
from prometheus_client import REGISTRY

from gateway.rpc import RpcPool, ServiceCircuits
from ops.chaos.proxy import FaultyProxy
from services.auth.service import AuthService
from shared.broker import GATEWAY, access
from shared.errors import ServiceError, Unavailable
from tests.integration.outage_probe import OutageProbe, probe_database


@pytest.fixture(autouse=True)
def the_probes_database(monkeypatch, tmp_path):
    """The probe's own SQLite file, with the outbox table its relay sweeps."""
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", probe_database(tmp_path))


@pytest.fixture
def pool(config):
    pool = RpcPool(
        access(GATEWAY, config["AMQP_URI"]), timeout=1, size=2, circuits=ServiceCircuits(2, 1)
    )
    yield pool
    pool.close()


@pytest.fixture
def proxy_to_broker(config):
    """A FaultyProxy in front of the test's broker; `.uri` reaches the vhost through it."""
    parts = urllib.parse.urlsplit(config["AMQP_URI"])
    proxy = FaultyProxy(parts.hostname, parts.port or 5672).start()
    proxy.uri = parts._replace(
        netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    ).geturl()
    yield proxy
    proxy.close()


def call(pool, service, method, *args):
    with pool.client() as rpc:
        return getattr(getattr(rpc, service), method)(*args)


def state(service) -> float:
    return REGISTRY.get_sample_value("gateway_circuit_state", {"service": service})


def test_a_slow_service_is_refused_at_once_once_its_circuit_opens(container_factory, config, pool):
    container_factory(OutageProbe, config).start()
    codes = []
    for _ in range(2):  # each waits out the RPC timeout; the second trips it
        with pytest.raises(Unavailable) as timed_out:
            call(pool, "outage_probe", "slow", 3)
        codes.append(timed_out.value.code)
    assert codes == ["service_timeout", "service_unavailable"]
    assert state("outage_probe") == 2

    started = time.monotonic()
    with pytest.raises(Unavailable) as refused:
        call(pool, "outage_probe", "slow", 0)
    assert time.monotonic() - started < 0.1  # no round trip, no timeout
    assert refused.value.code == "service_unavailable"
    assert "outage_probe keeps failing" in refused.value.detail

    time.sleep(1.1)  # the pause: one trial call goes through, and closes it
    assert call(pool, "outage_probe", "slow", 0) == "done"
    assert state("outage_probe") == 0


def test_a_service_that_is_not_running_opens_its_circuit_and_no_other(
    container_factory, config, pool
):
    container_factory(OutageProbe, config).start()
    for _ in range(3):
        with pytest.raises(Unavailable):
            call(pool, "nosuch", "anything")
    assert state("nosuch") == 2
    assert call(pool, "outage_probe", "slow", 0) == "done"


def test_business_errors_mean_the_service_is_up(container_factory, config, pool):
    container_factory(AuthService, config).start()
    for _ in range(4):
        with pytest.raises(ServiceError) as refused:
            call(pool, "auth", "login", "nobody@example.com", "wrong password 123")
        assert not isinstance(refused.value, Unavailable)
    assert state("auth") == 0


def test_after_a_broker_connection_cut_the_first_call_gets_a_live_client(
    container_factory, config, proxy_to_broker
):
    """Every idle client loses its connection at the same moment; a call
    must not meet them one by one (each a failure counted against the
    service: after a chaos drop this kept auth's circuit open for minutes)."""
    container_factory(OutageProbe, config).start()
    pool = RpcPool(
        access(GATEWAY, proxy_to_broker.uri), timeout=5, size=4, circuits=ServiceCircuits(2, 30)
    )
    try:
        # Four clients at once, then idle in the pool.
        threads = [
            threading.Thread(target=call, args=(pool, "outage_probe", "slow", 0.3))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pool._idle.qsize() == 4

        proxy_to_broker.drop()
        time.sleep(0.2)
        proxy_to_broker.pass_through()

        for _ in range(3):
            assert call(pool, "outage_probe", "slow", 0) == "done"
        assert state("outage_probe") == 0
    finally:
        pool.close()


def test_a_client_made_while_the_broker_says_nothing_gives_up_in_time(
    container_factory, config, proxy_to_broker
):
    """A new client's connection passes the handshake and then hears nothing
    (the chaos suite's `mute`): opening its channel waited for good, holding
    the request's thread. Its waits are bounded by the RPC timeout: the
    caller gets a 503, and once the path heals the next call goes through."""
    container_factory(OutageProbe, config).start()
    pool = RpcPool(
        access(GATEWAY, proxy_to_broker.uri), timeout=2, size=2, circuits=ServiceCircuits(5, 30)
    )
    outcome = []

    def muted_call():
        try:
            call(pool, "outage_probe", "slow", 0)
        except Unavailable as exc:
            outcome.append(exc.code)

    try:
        proxy_to_broker.mute_after_handshake()
        caller = threading.Thread(target=muted_call, daemon=True)
        caller.start()
        caller.join(timeout=15)
        assert not caller.is_alive(), "the call still waits on a silent broker"
        assert outcome == ["broker_unavailable"]
        proxy_to_broker.pass_through()
        assert call(pool, "outage_probe", "slow", 0) == "done"
    finally:
        pool.close()

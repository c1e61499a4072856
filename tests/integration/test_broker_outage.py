"""A broker outage does not kill a service (issue 11, part 1).

The service runs as a real process against a private broker node, which
is stopped while a call is in flight (so the reply cannot be sent) and
started again: the process must stay up, and answer once the broker is
back, without a restart.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ops.chaos.proxy import FaultyProxy
from ops.private_broker import PrivateBroker, free_port
from shared.broker import ANSWER_TIMEOUT
from shared.rpc import cluster_rpc
from tests.integration.outage_probe import probe_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def broker():
    node = PrivateBroker().start()
    yield node
    node.close()


def start_probe(amqp_uri: str, tmp_path: Path, **env: str) -> subprocess.Popen:
    """The probe service as a process of its own on `amqp_uri`, answering."""
    database = probe_database(tmp_path)
    health_port = free_port()
    log = open(tmp_path / "probe.log", "wb")  # noqa: SIM115 (closed by stop_probe)
    process = subprocess.Popen(
        [
            str(BIN / "nameko"),
            "run",
            "--config",
            "config.yml",
            "tests.integration.outage_probe:OutageProbe",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "AMQP_URI": amqp_uri,
            "OUTAGE_PROBE_DATABASE_URL": database,
            "HEARTBEAT": "5",
            "SERVICE_HEALTH_PORT": str(health_port),
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log, process.log_file = tmp_path / "probe.log", log
    process.health_port = health_port
    return process


def stop_probe(process: subprocess.Popen, grace: float = 20) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # a consumer that hangs cannot stop gracefully
        process.kill()
        process.wait()
    process.log_file.close()


@pytest.fixture
def probe(broker, tmp_path):
    process = start_probe(broker.uri, tmp_path)
    answer(broker, "health", timeout=30)
    yield process
    stop_probe(process)


def probe_health(process, mode: str) -> tuple[int, dict]:
    """This very process's own answer (shared.probes), as its container's probe asks."""
    url = f"http://127.0.0.1:{process.health_port}/health/{mode}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def answer(broker, method, *args, timeout=10.0):
    """Call the probe until it answers (it may still be reconnecting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster_rpc({"AMQP_URI": broker.uri}, timeout=2) as rpc:
                return getattr(rpc.outage_probe, method)(*args)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_reply_lost_to_an_outage_does_not_kill_the_service(broker, probe):
    with cluster_rpc({"AMQP_URI": broker.uri}, timeout=15) as rpc:
        pending = rpc.outage_probe.slow.call_async(3)
        time.sleep(0.5)  # the call is running in the probe
        broker.stop_app()
        with pytest.raises(Exception):  # noqa: B017 (its connection went with the broker)
            pending.result()
    time.sleep(3)  # the reply was due meanwhile, with no broker to take it
    broker.start_app()
    started = time.monotonic()
    assert probe.poll() is None, probe.log.read_text()[-3000:]
    try:
        assert answer(broker, "slow", 0, timeout=30) == "done"
    except Exception as failure:
        raise AssertionError(probe.log.read_text()[-4000:]) from failure
    back = time.monotonic() - started
    assert back < 20, f"answered {back:.1f} s after the broker came back"


def test_an_event_being_handled_in_an_outage_is_handled_after_it(broker, probe):
    answer(broker, "emit", 1, 3)
    time.sleep(1)  # published from the outbox, and being handled
    broker.stop_app()
    time.sleep(3)  # the handler finished meanwhile, with no broker to take the ack
    broker.start_app()
    assert probe.poll() is None, probe.log.read_text()[-3000:]
    answer(broker, "emit", 2, 0, timeout=30)
    deadline = time.monotonic() + 30
    while not {1, 2} <= set(answer(broker, "handled")):
        assert time.monotonic() < deadline, answer(broker, "handled")
        time.sleep(0.2)
    assert probe.poll() is None, probe.log.read_text()[-3000:]


def test_in_an_outage_the_process_is_alive_but_not_ready_and_ready_again_after(broker, probe):
    assert probe_health(probe, "ready") == (
        200,
        {"status": "ready", "checks": {"broker": "ok", "database": "ok", "consumer": "ok"}},
    )
    broker.stop_app()
    status, body = probe_health(probe, "ready")
    assert status == 503 and body["checks"]["broker"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert probe_health(probe, "live") == (200, {"status": "live"})  # nothing to restart
    broker.start_app()
    # Ready once its queue consumer is consuming again (kombu's backoff).
    deadline = time.monotonic() + 30
    while (answer_now := probe_health(probe, "ready"))[0] != 200:
        assert time.monotonic() < deadline, answer_now
        time.sleep(0.2)


@pytest.fixture
def proxy(broker):
    proxy = FaultyProxy("127.0.0.1", broker.port).start()
    yield proxy
    proxy.close()


def muted_reconnection(broker, proxy, tmp_path, stall_seconds: int):
    """A probe behind the proxy whose queue consumer, cut off, reconnects
    into a connection that finishes the handshake and then hears nothing
    more: opening its channel waits for an answer that never comes (what
    the chaos suite saw after a drop, docs/CHAOS.md). The path heals at
    once; only a new connection would use it."""
    uri = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    process = start_probe(uri, tmp_path, CONSUMER_STALL_SECONDS=str(stall_seconds))
    answer(broker, "health", timeout=30)
    proxy.mute_after_handshake()
    time.sleep(1.5)  # every connection of the probe is cut, and reconnects muted
    proxy.pass_through()
    return process


def test_a_consumer_whose_reconnection_hangs_is_reconnected_by_its_watchdog(
    broker, proxy, tmp_path
):
    process = muted_reconnection(broker, proxy, tmp_path, stall_seconds=3)
    try:
        status, body = probe_health(process, "ready")
        assert (status, body["checks"]["consumer"]) == (503, "connecting")
        started = time.monotonic()
        assert answer(broker, "handled", timeout=30) == []
        # Silent for 3 s past the last word from its loop, then reconnected.
        assert time.monotonic() - started < 20
        log = process.log.read_text()
        assert "queue consumer silent" in log
        # Shutting the connection's socket ended the wait: nothing was thrown.
        assert "ConsumerStalled" not in log
        assert probe_health(process, "ready")[0] == 200
    finally:
        stop_probe(process)


def test_without_the_watchdog_the_bounded_waits_end_the_hung_reconnection(broker, proxy, tmp_path):
    """The same fault, the watchdog set beyond the test: the consumer's
    connection has its waits bounded once it is up (shared.broker), so its
    channel's open gives up after ANSWER_TIMEOUT and the loop reconnects.
    Before that bound the probe stayed deaf until the broker closed the
    connection for missed heartbeats (HEARTBEAT, 30 s in config.yml, times two)."""
    process = muted_reconnection(broker, proxy, tmp_path, stall_seconds=600)
    try:
        with pytest.raises(Exception):  # noqa: B017 (nameko's RPC timeout)
            answer(broker, "handled", timeout=2)
        assert probe_health(process, "ready")[1]["checks"]["consumer"] == "connecting"
        assert answer(broker, "handled", timeout=ANSWER_TIMEOUT + 20) == []
        log = process.log.read_text()
        assert "queue consumer silent" not in log
        assert "TimeoutError" in log  # the bound, as a lost connection
        assert probe_health(process, "ready")[0] == 200
    finally:
        stop_probe(process)

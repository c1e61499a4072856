"""Small helpers the integration tests share (fixtures are in conftest.py)."""

import time

import eventlet


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll `predicate` until it returns something truthy, and return that;
    fail the test after `timeout` seconds. Sleeps greenly, so services
    running in this process keep working meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        eventlet.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s")

"""Rate limits counted in process memory, under gunicorn's threads."""

import threading
import time

from gateway import ratelimit
from gateway.ratelimit import LockedMemoryStorage
from tests.unit.helpers import gateway_app


def test_a_window_counts_until_it_expires_then_starts_again():
    storage = LockedMemoryStorage()
    assert [storage.incr("k", expiry=0.2) for _ in range(3)] == [1, 2, 3]
    assert storage.get("k") == 3 and storage.get_expiry("k") > time.time()
    time.sleep(0.25)
    assert storage.get("k") == 0
    assert storage.incr("k", expiry=0.2) == 1
    storage.clear("k")
    assert storage.get("k") == 0


def test_threads_counting_at_once_lose_no_hit():
    storage = LockedMemoryStorage()

    def hit():
        for _ in range(2000):
            storage.incr("shared", expiry=60)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.get("shared") == 32_000


def test_memory_storage_is_replaced_and_others_are_kept():
    assert ratelimit.storage_uri("memory://") == "locked-memory://"
    assert ratelimit.storage_uri("redis://:pw@redis:6379/0") == "redis://:pw@redis:6379/0"
    assert ratelimit.per_process("locked-memory://")
    assert not ratelimit.per_process("redis://redis:6379")


def test_concurrent_requests_are_limited_exactly_and_never_fail():
    """limits' own memory storage answered 500s here (two threads starting one
    expiry timer); every request must get its answer, and exactly the limit pass."""
    app = gateway_app(RATELIMIT_AUTH="100 per minute")
    statuses: list[int] = []
    lock = threading.Lock()

    def client():
        test_client = app.test_client()  # one per thread, as gunicorn's threads have
        for _ in range(20):
            status = test_client.post("/v1/auth/login", json={}).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) == [422, 429]
    assert statuses.count(422) == 100 and statuses.count(429) == 60

"""The short chaos suite: the books balance after faults under a running workload.

`python -m ops.chaos --short` as a test (the full one is `make chaos`,
docs/CHAOS.md): a service SIGKILLed, a gateway worker killed, the broker
stopped and started, a service's PostgreSQL connections terminated and
its broker traffic dropped, all on a private broker and fresh databases,
while customers deposit, transfer and pay out with idempotent retries.
"""

from ops.chaos.suite import READY_LIMIT, SETTLE_LIMIT, run, table


def test_the_books_balance_after_faults_under_a_running_workload():
    report = run(short=True, seed=1)
    print(table(report))

    assert report.violations == [], f"logs kept in {report.logs}"
    assert len(report.outcomes) == 5
    for outcome in report.outcomes:
        assert outcome.canary == "completed", outcome
        assert outcome.ready_after is not None and outcome.ready_after < READY_LIMIT
        assert outcome.counts.failures == [], outcome  # no 5xx but 503
    assert report.settled_after is not None and report.settled_after < SETTLE_LIMIT
    assert report.statuses["completed"] > 0 and report.statuses["failed"] > 0
    assert report.statuses["pending"] == 0

"""docs/ARCHITECTURE.md's event diagram is the one the code draws (ops/scripts/event_diagram.py)."""

import pytest

from ops.scripts import event_diagram
from ops.scripts.event_diagram import InconsistentContracts, Subscription
from shared import contracts


@pytest.fixture(scope="module")
def subscriptions():
    return [*event_diagram.service_subscriptions(), *event_diagram.gateway_subscriptions()]


def test_the_architecture_doc_shows_the_diagram_the_code_draws():
    doc = event_diagram.DOC.read_text()
    drawn = event_diagram.render(doc, event_diagram.diagram())
    section = doc[doc.index(event_diagram.START) : doc.index(event_diagram.END)]
    wanted = drawn[drawn.index(event_diagram.START) : drawn.index(event_diagram.END)]
    assert section == wanted, (
        f"docs/ARCHITECTURE.md's event diagram differs from the code; run {event_diagram.COMMAND}"
    )


def test_every_consumer_listens_on_the_exchange_its_event_is_published_on(subscriptions):
    event_diagram.check(subscriptions)  # raises with the consumers that listen in vain
    assert {s.event for s in subscriptions} <= set(event_diagram.publisher_of())


def test_consumers_are_read_from_the_entrypoints_with_the_kinds_they_bind(subscriptions):
    found = {(s.consumer, s.publisher, s.event): s.kinds for s in subscriptions}
    assert found[("payments", "transactions", "transfer_requested")] == ("deposit",)
    assert found[("risk", "transactions", "transfer_requested")] == ("internal", "payout")
    assert found[("notifications", "auth", "user_registered")] == ()  # a @notification_step
    assert found[("gateway", "auth", "session_revoked")] == ()  # the gateway's own feed
    assert found[("gateway", "transactions", "transfer_completed")] == ()


def test_every_published_event_is_drawn_even_without_a_consumer():
    chart = event_diagram.mermaid([])
    for service, events in contracts.PUBLISHERS.items():
        assert f"{service}[{service}] --> {service}_events" in chart
        for event in events:
            assert f"{event}([{event}])" in chart


def test_a_consumer_naming_the_wrong_publisher_stops_the_drawing():
    wrong = Subscription("analytics", "accounts", contracts.TRANSFER_COMPLETED, ())
    with pytest.raises(InconsistentContracts, match="transactions publishes it"):
        event_diagram.mermaid([wrong])


def test_check_mode_fails_on_a_stale_diagram_with_the_command_to_fix_it(tmp_path, capsys):
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text(f"# Events\n\n{event_diagram.START}\nold\n{event_diagram.END}\n")

    assert event_diagram.main(["--check", "--doc", str(doc)]) == 1
    assert event_diagram.COMMAND in capsys.readouterr().err
    assert "old" in doc.read_text()

    assert event_diagram.main(["--doc", str(doc)]) == 0
    assert event_diagram.main(["--check", "--doc", str(doc)]) == 0
    assert doc.read_text().startswith("# Events\n\n")

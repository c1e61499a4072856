"""Draw which service publishes each event and which consume it, from the code.

    .venv/bin/python ops/scripts/event_diagram.py          # rewrite the diagram
    .venv/bin/python ops/scripts/event_diagram.py --check  # exit 1 if it is stale

The diagram is a Mermaid flowchart between the event-diagram markers of
docs/ARCHITECTURE.md. Publishers come from shared.contracts.PUBLISHERS;
consumers from the event entrypoints on each service class (@saga_step,
@notification_step: nameko EventHandlers) and from the gateway's event
feeds. A consumer that names another publisher than the event's, or a
contract event nobody publishes, stops the drawing: such a consumer would
wait on an exchange that never carries its event.
"""

import argparse
import inspect
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from nameko.events import EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from gateway.outcomes import TransferOutcomes
from gateway.revocations import RevocationList, RevocationListener
from shared import contracts
from shared.events import exchange_name
from shared.topology import service_classes

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
COMMAND = ".venv/bin/python ops/scripts/event_diagram.py"
START = "<!-- event-diagram:start -->"
END = "<!-- event-diagram:end -->"
GATEWAY = "gateway"


class Subscription(NamedTuple):
    consumer: str
    publisher: str
    event: str
    kinds: tuple[str, ...]  # () for every kind


class InconsistentContracts(Exception):
    pass


def _kinds(binding_keys: Iterable[str]) -> tuple[str, ...]:
    """`transfer_requested.deposit` -> ("deposit",); `<type>.#` or `<type>` -> every kind."""
    kinds = {key.partition(".")[2] for key in binding_keys} - {"", "#"}
    return tuple(kind for kind in contracts.KINDS if kind in kinds)


def service_subscriptions() -> Iterator[Subscription]:
    for service in service_classes():
        for _, method in inspect.getmembers(service, inspect.isfunction):
            for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, EventHandler):
                    yield Subscription(
                        service.name,
                        entrypoint.source_service,
                        entrypoint.event_type,
                        _kinds(getattr(entrypoint, "binding_keys", ())),
                    )


def gateway_subscriptions() -> Iterator[Subscription]:
    # The listeners the gateway runs, built as it builds them (no I/O until
    # started); their feed is private, but reading it beats a second list.
    unused = "amqp://unused"
    listeners = (
        RevocationListener(unused, RevocationList(keep_for=60), list),
        TransferOutcomes(unused, max_waiters=1),
    )
    publishers = {exchange_name(service): service for service in contracts.SERVICES}
    for listener in listeners:
        for binding in listener._feed._queue.bindings:
            publisher = publishers[binding.exchange.name]
            if binding.routing_key.startswith(contracts.OUTCOME_ROUTE_PREFIX):
                # The process's own key: what transactions routes there, every kind.
                for event in TransferOutcomes.EVENTS:
                    yield Subscription(GATEWAY, publisher, event, ())
                continue
            event = binding.routing_key.partition(".")[0]
            kinds = _kinds([binding.routing_key])
            yield Subscription(GATEWAY, publisher, event, kinds)


def publisher_of() -> dict[str, str]:
    """Each event's publisher; the contracts must name exactly one."""
    publishers: dict[str, str] = {}
    errors = []
    for service, events in contracts.PUBLISHERS.items():
        for event in events:
            if event in publishers:
                errors.append(f"{event} is published by both {publishers[event]} and {service}")
            publishers[event] = service
    errors += [
        f"{event} has a contract but no publisher in contracts.PUBLISHERS"
        for event in contracts.EVENTS
        if event not in publishers
    ]
    if errors:
        raise InconsistentContracts("; ".join(errors))
    return publishers


def check(subscriptions: Iterable[Subscription]) -> None:
    publishers = publisher_of()
    errors = [
        f"{s.consumer} listens for {s.event} from {s.publisher}, but "
        + (
            f"{publishers[s.event]} publishes it"
            if s.event in publishers
            else "no service publishes it (contracts.PUBLISHERS)"
        )
        for s in subscriptions
        if publishers.get(s.event) != s.publisher
    ]
    if errors:
        raise InconsistentContracts("; ".join(errors))


def mermaid(subscriptions: list[Subscription]) -> str:
    """Publishers on the left, their events in the middle, consumers on the right.

    A service that consumes too appears again on the right: drawn once, the
    saga's back-and-forth would tangle every arrow.
    """
    check(subscriptions)
    lines = ["flowchart LR"]
    for service, events in contracts.PUBLISHERS.items():
        lines.append(f"    subgraph {service}_events [{exchange_name(service)}]")
        lines += [f"        {event}([{event}])" for event in events]
        lines.append("    end")
        lines.append(f"    {service}[{service}] --> {service}_events")
    for s in sorted(subscriptions, key=lambda s: (s.publisher, s.event, s.consumer)):
        label = f"|{', '.join(s.kinds)}|" if s.kinds else ""
        lines.append(f"    {s.event} -->{label} to_{s.consumer}[{s.consumer}]")
    return "\n".join(lines) + "\n"


def diagram() -> str:
    return mermaid([*service_subscriptions(), *gateway_subscriptions()])


def render(doc: str, chart: str) -> str:
    """`doc` with the text between the markers replaced by `chart`."""
    if doc.count(START) != 1 or doc.count(END) != 1 or doc.index(START) > doc.index(END):
        raise ValueError(f"expected one {START} ... {END} section")
    before, rest = doc.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n```mermaid\n{chart}```\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the diagram is stale")
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file to update")
    args = parser.parse_args(argv)
    current = args.doc.read_text()
    wanted = render(current, diagram())
    if current == wanted:
        return 0
    if args.check:
        print(
            f"{args.doc}: the event diagram differs from the code; run {COMMAND}", file=sys.stderr
        )
        return 1
    args.doc.write_text(wanted)
    print(f"{args.doc}: event diagram updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

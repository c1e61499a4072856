"""Inspect and replay a service's parked events (its dead-letter queue).

    python -m shared.dlq list <service> [--json] [--limit N]
    python -m shared.dlq replay <service> (--event-id ID | --all) [--force]
    python -m shared.dlq purge <service> --event-id ID

Talks to the broker at AMQP_URI. Messages are parked in the service's
parking queue (`saga.<service>.dead-letters`; `<service>.dead-letters`
under SAGA_QUEUE_TYPE=classic, shared.topology) by
`shared.event_handlers.saga_step` after their last failed attempt, and by
RabbitMQ when one delivery after another never finished (a worker killed
each time: the quorum queue's delivery limit; those carry RabbitMQ's
x-death instead of our failure headers) (docs/OPERATIONS.md, "Failed
events").

The queue is read with basic.get without acknowledging: listing leaves
every message in place. `replay` republishes a message to the handler
queue it came from (header x-original-queue) with its attempt count reset,
and removes it from the parking queue only after the broker confirmed the
republish. It leaves parked, and says so, an event older than the
consumers' inbox retention (INBOX_RETENTION_DAYS, shared.housekeeping):
its id may be gone from the inbox, so if a copy of it was handled once
already, the replay would make its effect twice. --force replays it
anyway, once a person has checked that its effect is not there. `purge`
deletes the messages of one event id; there is no "purge everything" on
purpose (use the management UI if you must).

Exit status: 0 done; 1 nothing matched, the queue does not exist, or a
replay failed (what was not confirmed stays parked); 2 bad arguments.
"""

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial

from amqp.exceptions import NotFound
from kombu import Producer, Queue

from shared import broker, config
from shared.topology import dead_letter_queue_name, republish

# The headers of a failed event's copies (written by shared.event_handlers,
# read here). Kept in this module so the CLI imports neither nameko nor
# eventlet.
ATTEMPTS = "x-attempts"  # failed attempts so far (absent: none)
ORIGINAL_QUEUE = "x-original-queue"  # the handler's queue: where a replay goes
HANDLER = "x-handler"  # "<service>.<method>"
SOURCE_SERVICE = "x-source-service"
EVENT_TYPE = "x-event-type"
EXCEPTION_TYPE = "x-exception-type"
EXCEPTION_MESSAGE = "x-exception-message"
FAILED_AT = "x-failed-at"  # time of the last failure
PARKED_AT = "x-parked-at"  # time it entered the dead-letter queue
REPLAYED_AT = "x-replayed-at"  # time of the last replay (kept on later copies)

FAILURE_HEADERS = (
    ATTEMPTS,
    ORIGINAL_QUEUE,
    HANDLER,
    SOURCE_SERVICE,
    EVENT_TYPE,
    EXCEPTION_TYPE,
    EXCEPTION_MESSAGE,
    FAILED_AT,
    PARKED_AT,
)
# RabbitMQ's dead-lettering bookkeeping; not ours to carry along.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")

_CORRELATION_HEADER = "nameko.correlation_id"


def carried_headers(headers: Mapping | None) -> dict:
    """What a copy keeps: the producer's headers (nameko.* context data) and
    x-replayed-at; not the previous failure's headers, not RabbitMQ's."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if key not in FAILURE_HEADERS and not key.startswith(_BROKER_HEADERS)
    }


class DeadLetterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Parked:
    """What an operator needs to know about one parked message."""

    event_type: str | None
    event_id: str | None
    correlation_id: str | None
    original_queue: str | None
    handler: str | None
    error_type: str | None
    error_message: str | None
    attempts: int | None
    parked_at: str | None
    replayed_at: str | None
    occurred_at: str | None = None  # the event's own time (its envelope's)


def describe(headers: Mapping | None, body: bytes, content_type: str | None) -> Parked:
    """Read a parked message's headers and envelope (never fails)."""
    headers = headers or {}
    envelope = {}
    if content_type in (None, "application/json"):
        try:
            decoded = json.loads(body)
        except (TypeError, ValueError, UnicodeDecodeError):
            decoded = None
        if isinstance(decoded, dict):
            envelope = decoded
    attempts = headers.get(ATTEMPTS)
    death = _last_death(headers)
    died_at = death.get("time")
    return Parked(
        event_type=envelope.get("type") or headers.get(EVENT_TYPE),
        event_id=envelope.get("event_id"),
        correlation_id=headers.get(_CORRELATION_HEADER) or envelope.get("correlation_id"),
        original_queue=headers.get(ORIGINAL_QUEUE) or death.get("queue"),
        handler=headers.get(HANDLER),
        error_type=headers.get(EXCEPTION_TYPE) or _death_reason(death),
        error_message=headers.get(EXCEPTION_MESSAGE) or _DEATHS.get(death.get("reason")),
        attempts=int(attempts) if isinstance(attempts, int) else None,
        parked_at=headers.get(PARKED_AT)
        or (died_at.isoformat() if isinstance(died_at, datetime) else None),
        replayed_at=headers.get(REPLAYED_AT),
        occurred_at=envelope.get("occurred_at")
        if isinstance(envelope.get("occurred_at"), str)
        else None,
    )


# Why RabbitMQ dead-lettered a message into the parking queue itself.
_DEATHS = {
    "delivery_limit": "delivered more than SAGA_DELIVERY_LIMIT times without being settled "
    "(its worker died or lost its connection every time)",
}


def _last_death(headers: Mapping) -> dict:
    """RabbitMQ's most recent dead-lettering of this message (x-death), if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return dict(deaths[0])
    return {}


def _death_reason(death: Mapping) -> str | None:
    return f"rabbitmq:{death['reason']}" if death.get("reason") else None


def _older_than(parked: Parked, cutoff: datetime) -> bool:
    """The event happened before `cutoff` (by its envelope, else by when it
    was parked; a time that cannot be read counts as old)."""
    stamp = parked.occurred_at or parked.parked_at
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return True
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment < cutoff


def replay_headers(headers: Mapping | None, now: datetime) -> dict:
    """A replayed copy: the producer's headers, no failure record, attempts reset."""
    copy = carried_headers(headers)
    copy[REPLAYED_AT] = now.isoformat()
    return copy


@contextmanager
def _parked(amqp_uri: str, service: str) -> Iterator[tuple[list, Callable]]:
    """Every message currently parked, held unacknowledged, plus a publisher.

    Whatever is not acked by the caller goes back to the queue, in its
    original order, when the block ends.
    """
    name = dead_letter_queue_name(service)
    access = broker.access(broker.OPERATOR, amqp_uri)
    with access.connection(transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue = Queue(name, durable=True)(channel)
        try:
            _, count, _ = queue.queue_declare(passive=True)
        except NotFound:
            raise DeadLetterError(
                f"no queue {name!r}: nothing was ever parked for {service!r} "
                "(or the service name is wrong)"
            ) from None
        held = []
        try:
            # At most what was there at the start: a replayed event that
            # fails again is parked anew and is not picked up twice.
            while len(held) < count:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                held.append(message)
            producer = Producer(conn.channel())
            yield held, partial(republish, producer, user_id=access.identity)
        finally:
            if channel.is_open:
                for message in held:
                    if not message.acknowledged:
                        message.requeue()


def list_parked(amqp_uri: str, service: str) -> list[Parked]:
    with _parked(amqp_uri, service) as (held, _):
        return [describe(m.headers, m.body, m.content_type) for m in held]


@dataclass
class ReplayOutcome:
    replayed: list[Parked]
    failed: list[tuple[Parked, str]]


def replay(
    amqp_uri: str, service: str, event_id: str | None = None, *, force: bool = False
) -> ReplayOutcome:
    """Replay one event's parked messages, or every parked message (event_id None);
    one older than the inbox retention only when forced."""
    outcome = ReplayOutcome([], [])
    now = datetime.now(UTC)
    retention = config.inbox_retention()
    with _parked(amqp_uri, service) as (held, publish):
        for message in held:
            parked = describe(message.headers, message.body, message.content_type)
            if event_id is not None and parked.event_id != event_id:
                continue
            if not parked.original_queue:
                outcome.failed.append((parked, "no x-original-queue header"))
                continue
            if not force and _older_than(parked, now - retention):
                outcome.failed.append(
                    (
                        parked,
                        f"older than the inbox retention ({retention.days} days): a copy "
                        "handled before would no longer be recognised; check its effect, "
                        "then replay with --force",
                    )
                )
                continue
            try:
                publish(message, parked.original_queue, replay_headers(message.headers, now))
            except Exception as exc:  # noqa: BLE001 (reported; the message stays parked)
                outcome.failed.append((parked, f"{type(exc).__name__}: {exc}"))
                break  # the connection's state is unknown: stop here
            message.ack()
            outcome.replayed.append(parked)
    return outcome


def purge(amqp_uri: str, service: str, event_id: str) -> list[Parked]:
    """Delete the parked messages of one event id."""
    if not event_id:
        raise DeadLetterError("purge needs an event id")
    purged = []
    with _parked(amqp_uri, service) as (held, _):
        for message in held:
            parked = describe(message.headers, message.body, message.content_type)
            if parked.event_id == event_id:
                message.ack()
                purged.append(parked)
    return purged


_COLUMNS = (
    ("parked_at", "PARKED AT"),
    ("event_type", "EVENT TYPE"),
    ("event_id", "EVENT ID"),
    ("attempts", "ATTEMPTS"),
    ("original_queue", "ORIGINAL QUEUE"),
    ("error", "ERROR"),
)


def _row(parked: Parked) -> dict:
    error = f"{parked.error_type}: {parked.error_message}" if parked.error_type else ""
    return {**asdict(parked), "error": error.replace("\n", " ")[:200]}


def format_table(items: list[Parked]) -> str:
    rows = [
        {key: "-" if value is None else str(value) for key, value in _row(p).items()} for p in items
    ]
    widths = {key: max([len(title)] + [len(row[key]) for row in rows]) for key, title in _COLUMNS}
    lines = ["  ".join(title.ljust(widths[key]) for key, title in _COLUMNS).rstrip()]
    for row in rows:
        lines.append("  ".join(row[key].ljust(widths[key]) for key, _ in _COLUMNS).rstrip())
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.dlq",
        description="Inspect and replay a service's parked events (saga.<service>.dead-letters).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="show every parked message (leaves them parked)")
    show.add_argument("service")
    show.add_argument("--json", action="store_true", help="one JSON object per message")
    again = commands.add_parser("replay", help="send parked messages back to their handler")
    again.add_argument("service")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", help="replay the messages of this event")
    which.add_argument("--all", action="store_true", help="replay every parked message")
    again.add_argument(
        "--force",
        action="store_true",
        help="also replay events older than the inbox retention (check their effect first)",
    )
    drop = commands.add_parser("purge", help="delete the parked messages of one event")
    drop.add_argument("service")
    drop.add_argument("--event-id", required=True, help="the event to delete")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    amqp_uri = config.amqp_uri()
    try:
        if args.command == "list":
            items = list_parked(amqp_uri, args.service)
            if args.json:
                for item in items:
                    print(json.dumps(asdict(item)))
            else:
                print(format_table(items))
                print(f"{len(items)} parked in {dead_letter_queue_name(args.service)}")
            return 0
        if args.command == "replay":
            outcome = replay(
                amqp_uri, args.service, None if args.all else args.event_id, force=args.force
            )
            for item in outcome.replayed:
                print(f"replayed {item.event_type} {item.event_id} -> {item.original_queue}")
            for item, reason in outcome.failed:
                print(f"NOT replayed {item.event_type} {item.event_id}: {reason}", file=sys.stderr)
            if not outcome.replayed and not outcome.failed and not args.all:
                print(f"no parked message with event id {args.event_id}", file=sys.stderr)
                return 1
            print(f"{len(outcome.replayed)} replayed, {len(outcome.failed)} not replayed")
            return 1 if outcome.failed else 0
        purged = purge(amqp_uri, args.service, args.event_id)
        for item in purged:
            print(f"purged {item.event_type} {item.event_id}")
        if not purged:
            print(f"no parked message with event id {args.event_id}", file=sys.stderr)
            return 1
        return 0
    except DeadLetterError as exc:
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The saga's broker topology, declared in one step before any service starts.

    python -m shared.topology declare            # every exchange, queue and binding
    python -m shared.topology declare --check    # what is missing or declared otherwise
    python -m shared.topology migrate [--drain]  # from classic queues to quorum queues

Derived from the code, not from a list: every `@saga_step` (and
`@notification_step`) entrypoint on every service class of
shared.contracts.SERVICES gives a handler queue bound to its publisher's
exchange by its routing keys, one retry queue per backoff delay of its
policy, and its service's parking queue. Services declare the same
queues when they start (a service started against a broker this step
never saw still works): one function, `handler_queues`, builds the
kombu objects for both, because RabbitMQ refuses a declaration whose
arguments differ from the existing queue's (PRECONDITION_FAILED).

Queue types (SAGA_QUEUE_TYPE, default quorum):

- quorum: replicated, and RabbitMQ counts deliveries. A handler queue
  dead-letters a message delivered more than SAGA_DELIVERY_LIMIT times
  without being settled (its worker killed by the OOM killer, its
  connection lost) to the parking queue instead of redelivering it for
  ever. Dead-lettering (retry queue -> handler queue, handler queue ->
  parking queue) is at-least-once, which RabbitMQ only does for queues
  with `overflow: reject-publish`. Names: `saga.<service>.<method>`,
  `saga.<service>.<method>.retry-<delay>ms`, `saga.<service>.dead-letters`.
- classic: the queues before quorum queues, under their old names
  (`evt-<source>-<event>--<service>.<method>`, `<service>.dead-letters`),
  with no delivery limit and at-most-once dead-lettering.

A queue's type cannot change in place, so the two sets have different
names and `migrate` moves a running broker from one to the other
(docs/OPERATIONS.md, "Moving the saga to quorum queues").

The delivery limit and a handler's `attempts` count different things.
`attempts` counts deliveries that ended with the handler raising: each
is settled (a copy goes to a retry queue, the original is acked), so the
copy starts with a delivery count of 0. The limit counts deliveries of
one copy that were never settled. A message that keeps killing its
worker is parked after SAGA_DELIVERY_LIMIT + 1 deliveries; one that
fails cleanly is parked after `attempts`; at worst a message is
delivered attempts x (SAGA_DELIVERY_LIMIT + 1) times.

Talks to the broker at AMQP_URI. Exit status: 0 done; 1 something is
missing or wrong (--check), or a migration step was refused; 2 bad
arguments.
"""

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field

from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Exchange, Producer, Queue, binding

from shared import broker, config, contracts

QUEUE_TYPE_KEY = "SAGA_QUEUE_TYPE"
DELIVERY_LIMIT_KEY = "SAGA_DELIVERY_LIMIT"
QUORUM = "quorum"
CLASSIC = "classic"
DEFAULT_DELIVERY_LIMIT = 10
PREFIX = "saga."
# A copy whose header names the handler queue it failed in (shared.dlq).
_ORIGINAL_QUEUE = "x-original-queue"


class TopologyError(ValueError):
    pass


@dataclass(frozen=True)
class QueueSettings:
    """How saga queues are declared: their type, and for quorum queues the
    deliveries of one message before it is parked."""

    queue_type: str = QUORUM
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    def __post_init__(self):
        if self.queue_type not in (QUORUM, CLASSIC):
            raise TopologyError(
                f"{QUEUE_TYPE_KEY} must be {QUORUM} or {CLASSIC}, got {self.queue_type!r}"
            )
        if self.delivery_limit < 1:
            raise TopologyError(
                f"{DELIVERY_LIMIT_KEY} must be at least 1, got {self.delivery_limit}"
            )

    @property
    def quorum(self) -> bool:
        return self.queue_type == QUORUM


def queue_settings(
    container_config: Mapping | None = None, environ: Mapping | None = None
) -> QueueSettings:
    """The container config's values, else the environment's, else quorum with the default limit."""
    sources = (container_config or {}, os.environ if environ is None else environ)

    def pick(key):
        return next((s.get(key) for s in sources if s.get(key) not in (None, "")), None)

    queue_type = str(pick(QUEUE_TYPE_KEY) or QUORUM).strip().lower()
    raw_limit = pick(DELIVERY_LIMIT_KEY)
    try:
        limit = DEFAULT_DELIVERY_LIMIT if raw_limit is None else int(raw_limit)
    except (TypeError, ValueError):
        raise TopologyError(f"{DELIVERY_LIMIT_KEY} must be an integer, got {raw_limit!r}") from None
    return QueueSettings(queue_type, limit)


# -- names -------------------------------------------------------------------


def handler_queue_name(
    service: str, method: str, source_service: str, event_type: str, settings: QueueSettings
) -> str:
    if settings.quorum:
        return f"{PREFIX}{service}.{method}"
    # nameko's own name for a SERVICE_POOL handler's queue.
    return f"evt-{source_service}-{event_type}--{service}.{method}"


def retry_queue_name(handler_queue: str, delay_ms: int) -> str:
    return f"{handler_queue}.retry-{delay_ms}ms"


def requeue_exchange(service: str) -> Exchange:
    """Where a service's handlers put the copies of events that failed: a
    direct exchange of its own, routing by queue name to its retry and
    parking queues. Publishing by queue name through the default exchange
    would need a permission that reaches every queue of the vhost, another
    service's RPC queue included (shared.access)."""
    return Exchange(f"saga.{service}.requeue", type="direct", durable=True)


def dead_letter_queue_name(service: str, settings: QueueSettings | None = None) -> str:
    settings = settings or queue_settings()
    return f"{PREFIX if settings.quorum else ''}{service}.dead-letters"


# -- the queues of one handler ---------------------------------------------------


@dataclass(frozen=True)
class HandlerQueues:
    """Where a handler's events arrive, wait to be retried, and are parked."""

    queue: Queue
    retry_queues: dict[int, Queue]
    dead_letter_queue: Queue

    def all(self) -> list[Queue]:
        return [self.queue, *self.retry_queues.values(), self.dead_letter_queue]


def _quorum(dead_letter_to: str | None = None, delivery_limit: int | None = None) -> dict:
    arguments = {"x-queue-type": QUORUM}
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    if dead_letter_to is not None:
        arguments.update(
            {
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_letter_to,
                # RabbitMQ dead-letters at least once only from a queue that
                # rejects publishes when full (it never is: no length limit).
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )
    return arguments


def handler_queues(
    *,
    service: str,
    method: str,
    source_service: str,
    event_type: str,
    exchange: Exchange,
    binding_keys: Iterable[str],
    retry_delays_ms: Iterable[int],
    settings: QueueSettings,
) -> HandlerQueues:
    """The kombu queues of one saga handler, as its service and this module declare them."""
    name = handler_queue_name(service, method, source_service, event_type, settings)
    parking = dead_letter_queue_name(service, settings)
    bindings = [binding(exchange, routing_key=key) for key in binding_keys]
    requeue = requeue_exchange(service)
    if settings.quorum:
        queue_arguments = _quorum(parking, settings.delivery_limit)
        parking_arguments = _quorum()
    else:
        queue_arguments, parking_arguments = None, None
    retry_arguments = (
        _quorum(name)
        if settings.quorum
        else {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}
    )
    return HandlerQueues(
        queue=Queue(name, bindings=bindings, durable=True, queue_arguments=queue_arguments),
        retry_queues={
            delay: Queue(
                retry_queue_name(name, delay),
                exchange=requeue,
                routing_key=retry_queue_name(name, delay),
                durable=True,
                queue_arguments=retry_arguments,
            )
            for delay in sorted(set(retry_delays_ms))
        },
        dead_letter_queue=Queue(
            parking,
            exchange=requeue,
            routing_key=parking,
            durable=True,
            queue_arguments=parking_arguments,
        ),
    )


# -- the platform's handlers, from the service classes ---------------------------------


@dataclass(frozen=True)
class SagaHandler:
    service: str
    method: str
    step: object  # the SagaStep entrypoint as declared on the class (not bound)

    def queues(self, settings: QueueSettings, container_config: Mapping | None = None):
        from nameko.standalone.events import get_event_exchange

        step = self.step
        container_config = container_config or {}
        return handler_queues(
            service=self.service,
            method=self.method,
            source_service=step.source_service,
            event_type=step.event_type,
            exchange=get_event_exchange(step.source_service, container_config),
            binding_keys=step.binding_keys,
            retry_delays_ms=step.policy_for(container_config).retry_delays_ms(),
            settings=settings,
        )


def service_classes() -> Iterator[type]:
    """The nameko service class of each service in shared.contracts.SERVICES."""
    for name in contracts.SERVICES:
        module = importlib.import_module(f"services.{name}.service")
        (service,) = (
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__ and getattr(cls, "name", None) == name
        )
        yield service


def saga_handlers(classes: Iterable[type] | None = None) -> list[SagaHandler]:
    """Every saga step entrypoint of the given service classes (default: the platform's)."""
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    from shared.event_handlers import SagaStep

    handlers = []
    for service in service_classes() if classes is None else classes:
        for method_name, method in inspect.getmembers(service, inspect.isfunction):
            for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, SagaStep):
                    handlers.append(SagaHandler(service.name, method_name, entrypoint))
    return handlers


def _event_exchange(service: str) -> Exchange:
    from nameko.standalone.events import get_event_exchange

    return get_event_exchange(service, {})


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: int = 0

    def ok(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, line: str) -> None:
        self.problems += 1
        self.lines.append(line)


# -- declare and check ---------------------------------------------------------------


def declare(
    amqp_uri: str,
    settings: QueueSettings | None = None,
    handlers: list[SagaHandler] | None = None,
    publishers: Iterable[str] | None = None,
) -> Report:
    """Declare every event exchange and every saga queue with its bindings (idempotent)."""
    settings = settings or queue_settings()
    handlers = saga_handlers() if handlers is None else handlers
    publishers = contracts.PUBLISHERS if publishers is None else publishers
    report = Report()
    with broker.access(broker.OPERATOR, amqp_uri).connection() as connection:
        channel = connection.channel()
        for service in publishers:
            _event_exchange(service)(channel).declare()
        declared = set()
        for handler in handlers:
            for queue in handler.queues(settings).all():
                if queue.name not in declared:
                    queue(channel).declare()
                    declared.add(queue.name)
        report.ok(
            f"declared {len(list(publishers))} event exchanges and {len(declared)} "
            f"{settings.queue_type} queues for {len(handlers)} saga handlers"
        )
        if settings.quorum:
            for name, messages, consumers in _existing(connection, _classic_names(handlers)):
                report.ok(
                    f"note: classic queue {name} still exists ({messages} messages, "
                    f"{consumers} consumers); run `python -m shared.topology migrate` "
                    "once no service of the previous version runs"
                )
    return report


def check(
    amqp_uri: str,
    settings: QueueSettings | None = None,
    handlers: list[SagaHandler] | None = None,
    publishers: Iterable[str] | None = None,
) -> Report:
    """Report exchanges and queues that are missing or declared with other
    arguments (another type). Changes nothing: an existing queue is
    re-declared with its own arguments, which RabbitMQ accepts unchanged or
    refuses. Bindings cannot be read over AMQP: `declare` restores them."""
    settings = settings or queue_settings()
    handlers = saga_handlers() if handlers is None else handlers
    publishers = contracts.PUBLISHERS if publishers is None else publishers
    report = Report()
    with broker.access(broker.OPERATOR, amqp_uri).connection() as connection:
        expected = [_event_exchange(service) for service in publishers]
        queues = {q.name: q for h in handlers for q in h.queues(settings).all()}
        for exchange in expected:
            _check_one(connection, exchange, f"exchange {exchange.name}", report)
        for name, queue in queues.items():
            _check_one(connection, queue, f"{settings.queue_type} queue {name}", report)
        if report.problems == 0:
            report.ok(f"ok: {len(expected)} event exchanges and {len(queues)} queues")
    return report


def _check_one(connection, entity, label: str, report: Report) -> None:
    # A refused declaration closes its channel: one channel per question.
    for passive in (True, False):
        channel = connection.channel()
        try:
            bound = entity(channel)
            if isinstance(entity, Exchange):
                bound.declare(passive=passive)
            else:
                bound.queue_declare(passive=passive)
        except NotFound:
            report.problem(f"missing: {label}")
            return
        except PreconditionFailed as exc:
            report.problem(f"wrong arguments or type: {label}: {exc.reply_text}")
            return
        finally:
            with suppress(Exception):
                channel.close()


def _existing(connection, names: Iterable[str]) -> Iterator[tuple[str, int, int]]:
    """(name, ready messages, consumers) of each queue that exists."""
    for name in names:
        channel = connection.channel()
        try:
            _, messages, consumers = channel.queue_declare(name, passive=True)
        except NotFound:
            continue
        finally:
            with suppress(Exception):
                channel.close()
        yield name, messages, consumers


# -- migrate from classic queues ----------------------------------------------------------

_CLASSIC = QueueSettings(CLASSIC)


def _classic_names(handlers: list[SagaHandler]) -> list[str]:
    names = []
    for handler in handlers:
        for queue in handler.queues(_CLASSIC).all():
            if queue.name not in names:
                names.append(queue.name)
    return names


def migrate(
    amqp_uri: str,
    *,
    drain: bool = False,
    settings: QueueSettings | None = None,
    handlers: list[SagaHandler] | None = None,
    publishers: Iterable[str] | None = None,
) -> Report:
    """Replace the classic saga queues by the quorum ones on a running broker.

    1. Declare the quorum topology (new names, bound like the old queues:
       from now on every event reaches both).
    2. Refuse if an old queue still has consumers (the previous version runs).
    3. Unbind the old handler queues: nothing new reaches them.
    4. Refuse if they still hold messages, unless `drain`: then move every
       message (publisher confirms, mandatory; acked in the old queue only
       once confirmed) to its quorum counterpart: handler -> handler, retry ->
       the retry queue of the same delay (else the handler queue), parked ->
       parking queue, its x-original-queue renamed. Consumers' inboxes make
       the copies that reached both queues harmless.
    5. Delete the old queues, each only if it is empty and unused.
    """
    settings = settings or queue_settings()
    handlers = saga_handlers() if handlers is None else handlers
    report = Report()
    if not settings.quorum:
        report.ok(f"{QUEUE_TYPE_KEY}={CLASSIC}: nothing to migrate")
        return report
    report.lines += declare(amqp_uri, settings, handlers, publishers).lines[:1]
    pairs = [(h.queues(_CLASSIC), h.queues(settings)) for h in handlers]
    renamed = {old.queue.name: new.queue.name for old, new in pairs}
    access = broker.access(broker.OPERATOR, amqp_uri)
    with access.connection(transport_options={"confirm_publish": True}) as connection:
        present = {
            name: (messages, consumers)
            for name, messages, consumers in _existing(connection, _classic_names(handlers))
        }
        if not present:
            report.ok("no classic saga queue left: nothing to migrate")
            return report
        busy = [name for name, (_, consumers) in present.items() if consumers]
        if busy:
            report.problem(
                f"refused: {len(busy)} classic queues still have consumers (the previous "
                f"version still runs): {', '.join(busy)}; stop it first"
            )
            return report
        for old, _ in pairs:
            if old.queue.name in present:
                _unbind(connection, old.queue)
        full = {name: messages for name, (messages, _) in present.items() if messages}
        if full and not drain:
            for name, messages in full.items():
                report.problem(f"holds {messages} messages: {name}")
            report.problem("refused: run again with --drain to move them to the quorum queues")
            return report
        moves = []
        for old, new in pairs:
            for delay, retry in old.retry_queues.items():
                moves.append((retry.name, new.retry_queues.get(delay, new.queue).name, {}))
            moves.append((old.queue.name, new.queue.name, {}))
        for old, new in pairs:
            moves.append((old.dead_letter_queue.name, new.dead_letter_queue.name, renamed))
        done = []
        for source, target, rename in moves:
            if source in present and source not in done:
                done.append(source)
                moved = _move(connection, source, target, rename)
                if moved:
                    report.ok(f"moved {moved} messages: {source} -> {target}")
        for name in done:
            if _delete_if_empty(connection, name):
                report.ok(f"deleted {name}")
                present.pop(name)
        for name in present:
            report.problem(f"not deleted (not empty or in use again): {name}; run again")
    return report


def _unbind(connection, queue: Queue) -> None:
    """Remove the old queue's bindings (the kinds' keys and the bare event type)."""
    channel = connection.channel()
    try:
        for bound in queue.bindings:
            for key in {bound.routing_key, bound.routing_key.partition(".")[0]}:
                channel.queue_unbind(queue.name, bound.exchange.name, key)
    finally:
        channel.close()


def republish(
    producer: Producer,
    message,
    queue: str,
    headers: dict,
    expiration=None,
    *,
    exchange: Exchange | str = "",
    user_id: str | None = None,
) -> None:
    """Publish a copy of a received message to a queue (through the default
    exchange, or a direct one the queue is bound to by its name); returns
    once the broker confirmed it (a producer on a confirm_publish
    connection). Mandatory: a copy no queue takes raises instead of vanishing."""
    properties = {"user_id": user_id} if user_id else {}
    producer.publish(
        message.body,
        exchange=exchange,
        routing_key=queue,
        **properties,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=2,
        expiration=expiration,
        mandatory=True,
        retry=False,
    )


def _move(connection, source: str, target: str, rename: Mapping[str, str]) -> int:
    """Move every message of `source` to `target`; returns how many."""
    channel = connection.channel()
    producer = Producer(connection.channel())
    moved = 0
    try:
        while (message := Queue(source)(channel).get(no_ack=False)) is not None:
            headers = dict(message.headers or {})
            if headers.get(_ORIGINAL_QUEUE) in rename:
                headers[_ORIGINAL_QUEUE] = rename[headers[_ORIGINAL_QUEUE]]
            expiration = _seconds(message.properties.get("expiration"))
            republish(producer, message, target, headers, expiration)
            message.ack()
            moved += 1
    finally:
        channel.close()
    return moved


def _seconds(expiration) -> float | None:
    """A message's `expiration` property (milliseconds, as text) in seconds."""
    try:
        return int(expiration) / 1000
    except (TypeError, ValueError):
        return None


def _delete_if_empty(connection, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_delete(name, if_unused=True, if_empty=True)
    except (PreconditionFailed, NotFound):
        return False
    finally:
        with suppress(Exception):
            channel.close()
    return True


# -- the command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.topology",
        description="Declare, check or migrate the saga's exchanges, queues and bindings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    declare_command = commands.add_parser("declare", help="declare everything (idempotent)")
    declare_command.add_argument(
        "--check",
        action="store_true",
        help="declare nothing: report what is missing or declared with other arguments",
    )
    migrate_command = commands.add_parser(
        "migrate", help="replace the classic saga queues by quorum queues"
    )
    migrate_command.add_argument(
        "--drain", action="store_true", help="move what the classic queues hold, then delete them"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = queue_settings()
    except TopologyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    amqp_uri = config.amqp_uri()
    if args.command == "migrate":
        report = migrate(amqp_uri, drain=args.drain, settings=settings)
    elif args.check:
        report = check(amqp_uri, settings)
    else:
        report = declare(amqp_uri, settings)
    for line in report.lines:
        print(line, file=sys.stderr if report.problems else sys.stdout)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())

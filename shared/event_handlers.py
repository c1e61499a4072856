"""Event handlers for saga steps: a failed event is retried, then parked.

nameko's own EventHandler acks a message whose handler raised, so a saga
step that hits a database outage or a bug would silently drop the event.
`saga_step` is an EventHandler (SERVICE_POOL, reliable delivery: one
durable queue per service and method) that never drops one:

- the handler returns: the message is acked;
- the handler raises: a copy is published (publisher confirms, mandatory)
  to a retry queue whose messages expire after the backoff and are then
  dead-lettered by RabbitMQ back onto the handler's queue; only once that
  copy is confirmed is the original acked. The copy carries the number of
  failed attempts in `x-attempts`;
- the last attempt fails: the copy goes to the service's parking queue
  (`saga.<service>.dead-letters`, shared.topology) instead, with headers that say where it came
  from and why, and an ERROR log line. An operator inspects and replays it
  with `python -m shared.dlq` (docs/OPERATIONS.md).

If the copy cannot be published (broker trouble), the original is
returned to its queue after a short pause, so it is retried, not lost.
A delivery that never ends (its worker killed each time) is counted by the
quorum queue: after SAGA_DELIVERY_LIMIT more deliveries RabbitMQ parks it
itself (shared.topology).

Expected business outcomes (insufficient funds, a rejected transfer) are
not exceptions: a handler records its outcome event and returns. Raise
only for what a retry may fix (database down) or what a human must look at
(a bug); both end up retried and, at worst, parked.

Retries re-deliver the same message, so handlers must be idempotent: use
`shared.inbox.claim` in the transaction that makes the effect.

Retry queues: one per handler and backoff step,
`<handler queue>.retry-<delay>ms`, with `x-dead-letter-exchange: ""` and
`x-dead-letter-routing-key: <handler queue>`; copies are published with a
per-message `expiration`, through the service's own direct exchange
`saga.<service>.requeue` (each retry and parking queue is bound to it by
its name), never the default exchange, which would let the service publish
into any queue of the vhost (docs/SECURITY.md). RabbitMQ only expires messages at the head of a
queue, so a queue per delay keeps a 1 s retry from waiting behind an 8 s
one. Every queue of a step (handler, retry, parking) is built by
shared.topology.handler_queues, quorum queues unless SAGA_QUEUE_TYPE says
classic: the topology step declares them before services start, and the
step declares them again, idempotently, at start-up.

Headers: nameko's `nameko.*` context headers (correlation id) are kept on
every copy; RabbitMQ's `x-death` bookkeeping is dropped.

Policy (per handler; the first that is set wins): the decorator's
`attempts`, `backoff`, `max_backoff`; the container config keys
EVENT_RETRY_ATTEMPTS, EVENT_RETRY_BACKOFF_SECONDS,
EVENT_RETRY_MAX_BACKOFF_SECONDS; the environment variables of the same
names; defaults 5 attempts, 1 s doubling (1, 2, 4, 8 s), at most 300 s.
`attempts` counts deliveries to the handler, the first one included.
"""

import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import eventlet
from kombu import Producer, Queue
from kombu.pools import connections
from nameko.constants import (
    DEFAULT_TRANSPORT_OPTIONS,
    HEADER_PREFIX,
)
from nameko.events import SERVICE_POOL, EventHandler
from nameko.standalone.events import get_event_exchange

from shared import broker, contracts, correlation, metrics, topology
from shared.dlq import (
    ATTEMPTS,
    EVENT_TYPE,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    FAILED_AT,
    HANDLER,
    ORIGINAL_QUEUE,
    PARKED_AT,
    SOURCE_SERVICE,
    carried_headers,
)
from shared.topology import retry_queue_name  # noqa: F401 (where tests look for it)

log = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 1000

ATTEMPTS_KEY = "EVENT_RETRY_ATTEMPTS"
BACKOFF_KEY = "EVENT_RETRY_BACKOFF_SECONDS"
MAX_BACKOFF_KEY = "EVENT_RETRY_MAX_BACKOFF_SECONDS"

DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 300.0


class RetryPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing handler is tried, and how long between tries."""

    attempts: int = DEFAULT_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF  # seconds before the second attempt
    max_backoff: float = DEFAULT_MAX_BACKOFF

    def __post_init__(self):
        if self.attempts < 1:
            raise RetryPolicyError(f"attempts must be at least 1, got {self.attempts}")
        if self.backoff < 0.001:
            raise RetryPolicyError(f"backoff must be at least 0.001 s, got {self.backoff}")
        if self.max_backoff < self.backoff:
            raise RetryPolicyError(
                f"max_backoff ({self.max_backoff}) must not be below backoff ({self.backoff})"
            )

    def delay_ms(self, failed_attempts: int) -> int | None:
        """Milliseconds to wait after this many failures; None: park it."""
        if failed_attempts >= self.attempts:
            return None
        exponent = max(failed_attempts - 1, 0)
        delay = min(self.backoff * 2.0**exponent, self.max_backoff)
        return max(1, round(delay * 1000))

    def retry_delays_ms(self) -> list[int]:
        """Every distinct delay this policy uses (one retry queue each)."""
        delays = (self.delay_ms(failed) for failed in range(1, self.attempts))
        return sorted({delay for delay in delays if delay is not None})


def resolve_policy(
    attempts: int | None = None,
    backoff: float | None = None,
    max_backoff: float | None = None,
    config: Mapping | None = None,
    environ: Mapping | None = None,
) -> RetryPolicy:
    """The decorator's values, else the container config, else the environment."""
    sources = (config or {}, os.environ if environ is None else environ)

    def pick(given, key, kind):
        if given is not None:
            return kind(given)
        for source in sources:
            raw = source.get(key)
            if raw not in (None, ""):
                try:
                    return kind(raw)
                except (TypeError, ValueError):
                    raise RetryPolicyError(f"{key} must be a number, got {raw!r}") from None
        return None

    chosen_attempts = pick(attempts, ATTEMPTS_KEY, int)
    chosen_backoff = pick(backoff, BACKOFF_KEY, float)
    chosen_max = pick(max_backoff, MAX_BACKOFF_KEY, float)
    chosen_backoff = DEFAULT_BACKOFF if chosen_backoff is None else chosen_backoff
    if chosen_max is None:
        chosen_max = max(DEFAULT_MAX_BACKOFF, chosen_backoff)
    return RetryPolicy(
        attempts=DEFAULT_ATTEMPTS if chosen_attempts is None else chosen_attempts,
        backoff=chosen_backoff,
        max_backoff=chosen_max,
    )


def failed_attempts(headers: Mapping | None) -> int:
    """How many attempts failed before this delivery (0 for a fresh event)."""
    try:
        return max(int((headers or {}).get(ATTEMPTS, 0)), 0)
    except (TypeError, ValueError):
        return 0


def exception_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def failure_headers(
    headers: Mapping | None,
    *,
    attempts: int,
    exc: BaseException,
    original_queue: str,
    handler: str,
    source_service: str,
    event_type: str,
    now: datetime,
) -> dict:
    """Headers of the copy published after a failed attempt."""
    copy = carried_headers(headers)
    copy.update(
        {
            ATTEMPTS: attempts,
            ORIGINAL_QUEUE: original_queue,
            HANDLER: handler,
            SOURCE_SERVICE: source_service,
            EVENT_TYPE: event_type,
            EXCEPTION_TYPE: exception_name(exc),
            EXCEPTION_MESSAGE: str(exc)[:_MAX_ERROR_MESSAGE],
            FAILED_AT: now.isoformat(),
        }
    )
    return copy


def context_headers(headers: Mapping | None) -> dict:
    """nameko context data from `nameko.*` headers only (no x-death, x-attempts)."""
    prefix = f"{HEADER_PREFIX}."
    return {
        key[len(prefix) :]: value
        for key, value in (headers or {}).items()
        if key.startswith(prefix)
    }


class SagaStep(EventHandler):
    """An event handler whose failures are retried with backoff, then parked."""

    # Pause before handing a message back to its queue when its retry copy
    # could not be published (the broker is struggling: do not spin).
    requeue_pause = 1.0

    def __init__(
        self,
        source_service: str,
        event_type: str,
        *,
        kinds: tuple[str, ...] | None = None,
        attempts: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        **kwargs,
    ):
        self._policy_overrides = (attempts, backoff, max_backoff)
        self.policy: RetryPolicy | None = None
        # A bad value fails at import, not at the first failure.
        resolve_policy(attempts, backoff, max_backoff, config={}, environ={})
        # Events about a transfer are routed "<type>.<kind>": a step that
        # acts on some kinds only is never delivered the others.
        self.binding_keys = contracts.binding_keys(event_type, tuple(kinds) if kinds else None)
        super().__init__(
            source_service,
            event_type,
            handler_type=SERVICE_POOL,
            reliable_delivery=True,
            requeue_on_error=False,
            **kwargs,
        )

    @property
    def handler_name(self) -> str:
        return f"{self.container.service_name}.{self.method_name}"

    def policy_for(self, config: Mapping) -> RetryPolicy:
        """This step's retry policy under a container config (and the environment)."""
        return resolve_policy(*self._policy_overrides, config=config)

    def setup(self):
        super().setup()  # nameko's queue, registered with the consumer
        config = self.container.config
        self.policy = self.policy_for(config)
        # nameko binds its queue by event type alone; the topology's queue is
        # bound by the routing keys of the kinds this step handles instead
        # (the queue consumer declares it, with these bindings, when it starts).
        queues = topology.handler_queues(
            service=self.container.service_name,
            method=self.method_name,
            source_service=self.source_service,
            event_type=self.event_type,
            exchange=get_event_exchange(self.source_service, config),
            binding_keys=self.binding_keys,
            retry_delays_ms=self.policy.retry_delays_ms(),
            settings=topology.queue_settings(config),
        )
        self.queue = queues.queue
        self.retry_queues = queues.retry_queues
        self.dead_letter_queue = queues.dead_letter_queue
        transport_options = dict(DEFAULT_TRANSPORT_OPTIONS, confirm_publish=True)
        access = broker.from_config(config)
        self._identity = access.identity
        self._requeue = topology.requeue_exchange(self.container.service_name)
        self._connection = access.connection(transport_options=transport_options)
        with connections[self._connection].acquire(block=True) as conn:
            self._declare(conn)

    def _declare(self, conn) -> None:
        channel = conn.default_channel
        for queue in (*self.retry_queues.values(), self.dead_letter_queue):
            queue(channel).declare()

    def unpack_message_headers(self, message):
        # nameko would turn every header into context data, and context data
        # into headers of every call the worker makes: keep nameko.* only.
        return context_headers(message.headers)

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return result, exc_info
        try:
            self._reroute(message, worker_ctx, exc_info[1])
        except Exception:
            log.exception(
                "could not republish a failed event; returning it to its queue",
                extra={"queue": self.queue.name},
            )
            eventlet.sleep(self.requeue_pause)
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)
        return result, exc_info

    def _reroute(self, message, worker_ctx, exc: BaseException) -> None:
        attempts = failed_attempts(message.headers) + 1
        delay_ms = self.policy.delay_ms(attempts)
        now = datetime.now(UTC)
        headers = failure_headers(
            message.headers,
            attempts=attempts,
            exc=exc,
            original_queue=self.queue.name,
            handler=self.handler_name,
            source_service=self.source_service,
            event_type=self.event_type,
            now=now,
        )
        body = worker_ctx.args[0] if worker_ctx.args else None
        cid = _correlation_id(message, worker_ctx, body)
        details = {
            "event_id": body.get("event_id") if isinstance(body, dict) else None,
            "event_type": self.event_type,
            "handler": self.handler_name,
            "attempts": attempts,
            "error": headers[EXCEPTION_TYPE],
            "error_message": headers[EXCEPTION_MESSAGE],
            "correlation_id": cid,
        }
        if delay_ms is not None:
            self._publish(message, self.retry_queues[delay_ms], headers, expiration=delay_ms / 1000)
            metrics.SAGA_RETRIES.labels(self.handler_name).inc()
            with _bound(cid):
                log.warning(
                    "event handler failed; retrying in %.3f s", delay_ms / 1000, extra=details
                )
            return
        headers[PARKED_AT] = now.isoformat()
        self._publish(message, self.dead_letter_queue, headers)
        metrics.SAGA_PARKED.labels(self.handler_name).inc()
        with _bound(cid):
            log.error(
                "event handler failed %d times; parked in %s",
                attempts,
                self.dead_letter_queue.name,
                extra=details,
            )

    def _publish(self, message, queue: Queue, headers: dict, expiration=None) -> None:
        """Publish a copy of `message` to `queue`; returns once confirmed."""
        for attempt in (1, 2):
            with connections[self._connection].acquire(block=True) as conn:
                try:
                    if attempt == 2:
                        self._declare(conn)  # the queue may have been deleted
                    topology.republish(
                        Producer(conn.default_channel),
                        message,
                        queue.name,
                        headers,
                        expiration,
                        exchange=self._requeue,
                        user_id=self._identity,
                    )
                    return
                except Exception:
                    # Drop the connection: a returned message's late confirm
                    # must not be read as the confirm of the next publish.
                    _discard(conn)
                    if attempt == 2:
                        raise
                    log.warning(
                        "publishing a failed event's copy failed; trying again", exc_info=True
                    )


def _correlation_id(message, worker_ctx, body) -> str | None:
    """The event's correlation id: context data, its header, the envelope."""
    return (
        worker_ctx.data.get(correlation.CONTEXT_KEY)
        or (message.headers or {}).get(f"{HEADER_PREFIX}.{correlation.CONTEXT_KEY}")
        or (body.get("correlation_id") if isinstance(body, dict) else None)
        or correlation.current()
    )


@contextmanager
def _bound(cid):
    """Log lines written here carry the event's correlation id (ContextFilter)."""
    token = correlation.bind(cid)
    try:
        yield
    finally:
        correlation.reset(token)


def _discard(conn) -> None:
    # Already broken, perhaps: the pool reconnects it on its next use.
    with suppress(Exception):
        conn.collect()


saga_step = SagaStep.decorator

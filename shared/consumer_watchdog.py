"""A watchdog over the process's queue consumer: a reconnection that hangs is retried.

nameko's QueueConsumer (one per process: every RPC, event handler and
saga consumer of the service shares it) runs kombu's ConsumerMixin loop on
a green thread. When the broker connection is lost it reconnects, with a
timeout on the TCP connect and the AMQP handshake but none on what
follows: opening the channel, setting the prefetch, declaring and
consuming each queue wait for the broker's answer for as long as it takes.
If the broker's answers stop reaching the process just after the
handshake (the chaos proxy's `mute` fault, docs/CHAOS.md), the process
consumes nothing until the broker drops the connection for missed
heartbeats, a minute later; and the close that follows waits for an
answer too.

So each connection the loop makes has its waits bounded once it is up
(shared.broker.bound_waits: ANSWER_TIMEOUT of silence is a lost
connection) and is dropped without the AMQP close when it was lost, and
a watchdog covers whatever else could hold the loop.
A healthy loop is never silent for long: it iterates at least once a
second while it consumes (drain_events times out each second to check
heartbeats), and it reports each failed attempt with the seconds it will
sleep before the next. The watchdog notes each of those and, when the
loop has been silent longer than the next report was due plus
STALL_SECONDS, shuts the socket of the loop's connection, which ends
every wait on it at once (a closed connection, the same as a broker that
went away: the loop connects again and declares its consumers again). If
there is no socket to shut, or the loop is still silent at the next
check, it throws a connection error into the loop instead. Each
intervention is logged at WARNING and counted (queue_consumer_stalls_total).

`consuming()` says whether consumers are set up and the loop is alive:
the process's /health/ready reports it (shared.probes).
"""

import logging
import socket
import sys
import time
from collections.abc import Callable

import eventlet
from nameko.extensions import DependencyProvider
from nameko.messaging import QueueConsumer

from shared import broker, config
from shared.metrics import CONSUMER_STALLS

log = logging.getLogger(__name__)

# Longer than any step of a healthy reconnection: the TCP connect and each
# handshake frame time out after kombu's connect_timeout (5 s), and a
# broker that answers at all answers a declaration in milliseconds.
STALL_SECONDS = 30.0
CHECK_EVERY = 2.0
# The loop iterates every second while it consumes.
ALIVE_WITHIN = 5.0


class ConsumerStalled(ConnectionError):
    """Thrown into a consumer loop that made no progress: handled as a lost connection."""


class Progress:
    """What the consumer loop last reported, and when the next report is due."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.stall_seconds, self.clock = stall_seconds, clock
        self.heard_at = clock()
        self.grace = stall_seconds
        self.iterated_at: float | None = None
        self.ready = False
        self.connection = None  # the loop's latest kombu connection
        self.last_shut = None  # the connection whose socket the watchdog last shut

    def heard(self, grace: float = 0.0) -> None:
        self.heard_at, self.grace = self.clock(), grace + self.stall_seconds

    def iterated(self) -> None:
        self.heard()
        self.iterated_at = self.heard_at

    def stalled_for(self) -> float:
        """Seconds past the moment the loop should have been heard from (<= 0: not stalled)."""
        return self.clock() - self.heard_at - self.grace

    def consuming(self) -> bool:
        return (
            self.ready
            and self.iterated_at is not None
            and self.clock() - self.iterated_at < ALIVE_WITHIN
        )


def watch(consumer: QueueConsumer, progress: Progress) -> None:
    """Note the consumer loop's progress through its own hooks (kombu's
    ConsumerMixin calls them on the instance, so these wrap the instance's)."""
    create = consumer.create_connection
    iterate = consumer.on_iteration
    failed = consumer.on_connection_error
    revived = consumer.on_connection_revived
    ready = consumer.on_consume_ready

    def create_connection():
        connection = progress.connection = create()
        polite = connection.release

        def release():
            # The loop's `with` unwinding on a lost connection: no AMQP close,
            # whose answer a broker that stopped answering would make it wait
            # out (kombu's __exit__ knows no exception; the interpreter does).
            if isinstance(sys.exc_info()[1], OSError):
                broker.discard(connection)
            else:
                polite()

        connection.release = release
        return connection

    def on_iteration():
        progress.iterated()
        return iterate()

    def on_connection_error(exc, interval):
        progress.ready = False
        progress.heard(interval)
        return failed(exc, interval)

    def on_connection_revived():
        # Connected: from here on (the channel, the prefetch, each queue's
        # declaration and consumer, the close) no wait is unbounded.
        broker.bound_waits(progress.connection)
        progress.ready = False
        progress.heard()
        return revived()

    def on_consume_ready(connection, channel, consumers, **kwargs):
        progress.ready = True
        progress.heard()
        return ready(connection, channel, consumers, **kwargs)

    consumer.create_connection = create_connection
    consumer.on_iteration = on_iteration
    consumer.on_connection_error = on_connection_error
    consumer.on_connection_revived = on_connection_revived
    consumer.on_consume_ready = on_consume_ready


def nudge_if_stalled(consumer: QueueConsumer, progress: Progress) -> bool:
    """Throw ConsumerStalled into the consumer's loop if it is stalled; whether it was."""
    thread = consumer._gt
    if thread is None or thread.dead or consumer.should_stop:
        return False
    late = progress.stalled_for()
    if late <= 0:
        return False
    silent = progress.clock() - progress.heard_at
    log.warning(
        "queue consumer silent for %.0f s: reconnecting it",
        silent,
        extra={"silent_seconds": round(silent, 1), "consumers_ready": progress.ready},
    )
    CONSUMER_STALLS.inc()
    progress.ready = False
    progress.heard()  # give the new attempt its own time
    if not _shut(progress):
        thread.kill(ConsumerStalled(f"no progress for {silent:.0f} s"))
    return True


def _shut(progress: Progress) -> bool:
    """Shut the socket of the loop's connection, unless it was shut at the last
    intervention already (the loop is held by something else then); whether it was."""
    connection = progress.connection
    # kombu's Connection.connection would connect if it was not: read the attribute.
    sock = getattr(getattr(connection, "_connection", None), "sock", None)
    if sock is None or connection is progress.last_shut:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    progress.last_shut = connection
    return True


class ConsumerWatchdog(DependencyProvider):
    """Watches the process's QueueConsumer (see the module's docstring).
    CONSUMER_STALL_SECONDS overrides STALL_SECONDS."""

    def setup(self):
        stall = config.env_int("CONSUMER_STALL_SECONDS", int(STALL_SECONDS), minimum=1)
        self.progress = Progress(stall)
        self.consumer: QueueConsumer | None = None
        self._thread = None

    def start(self):
        # Dependencies start before the shared extensions: the consumer's
        # loop has not begun, so every report it makes is seen.
        self.consumer = next(
            (
                extension
                for extension in self.container.shared_extensions.values()
                if isinstance(extension, QueueConsumer)
            ),
            None,
        )
        if self.consumer is None:
            return
        watch(self.consumer, self.progress)
        self._thread = self.container.spawn_managed_thread(
            self._run, identifier="consumer_watchdog"
        )

    def stop(self):
        if self._thread is not None:
            self._thread.kill()
            self._thread = None

    def kill(self):
        self.stop()

    def _run(self) -> None:
        while True:
            eventlet.sleep(CHECK_EVERY)
            nudge_if_stalled(self.consumer, self.progress)

    def consuming(self) -> bool:
        """True when there is no consumer to watch, or its consumers are set up and it runs."""
        return self.consumer is None or self.progress.consuming()

"""Distributed tracing with OpenTelemetry: one trace per request, through the whole saga.

The W3C `traceparent` of the work in progress travels the way the
correlation id does (shared/correlation.py):

- the gateway accepts a client's `traceparent` header (or starts a trace)
  and opens a span per HTTP request; its RPC client sends the current span
  as `nameko.traceparent` context data;
- every nameko entrypoint (RPC, event handler, timer) opens a span, child
  of the caller's (`TracedEntrypoints`), and writes its own traceparent back
  into the worker's context data, so the RPCs and events it sends carry it;
- an event staged in the outbox stores the traceparent with its row
  (shared/outbox.py), so the consumer's span is the child of the step that
  staged it, however late it is published; the relay's publish is a span
  of its own, and so is every call to a payment or notification provider;
- retries and replays from the dead-letter queue keep the message's
  headers, so they continue the same trace;
- every JSON log line written inside a span carries `trace_id` and
  `span_id` (shared/logs.py).

Spans leave the process by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: what a team with Jaeger, Tempo
or Honeycomb sets, with the other OTEL_* variables of the specification
(headers, sampler: OTEL_TRACES_SAMPLER=parentbased_traceidratio and
OTEL_TRACES_SAMPLER_ARG=0.1 keeps one trace in ten). Without one, and with
TRACES_DIR set (`make run` sets $DATA_DIR/traces), each process appends its
spans to TRACES_DIR/<service>.jsonl, and

    python -m shared.traces <transfer id, correlation id or trace id>

prints the whole trace as a tree with timings. With neither, tracing is
off: the API's no-op spans cost next to nothing.
"""

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from nameko.constants import HEADER_PREFIX
from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared import correlation

log = logging.getLogger(__name__)

CONTEXT_KEY = "traceparent"  # nameko context data...
MESSAGE_HEADER = f"{HEADER_PREFIX}.{CONTEXT_KEY}"  # ...as its AMQP header (and outbox rows')
HEADER = "traceparent"  # HTTP
TRACES_DIR = "TRACES_DIR"

_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured_pid: int | None = None


def setup(service: str) -> bool:
    """Configure this process's tracer provider once (again after a fork).

    Returns whether spans are recorded anywhere."""
    global _configured_pid
    if _configured_pid == os.getpid():  # every request of the gateway asks
        return _recording()
    with _lock:
        if _configured_pid == os.getpid():
            return _recording()
        _configured_pid = os.getpid()
        exporter = _exporter(service)
        if exporter is None:
            return False
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        trace.set_tracer_provider(provider)
        log.info("tracing on", extra={"exporter": type(exporter).__name__})
        return True


def _recording() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def enabled() -> bool:
    """Whether this process records spans (setup found somewhere to send them)."""
    return _recording()


def record_publish(items, outcome: list[str], started_ns: int) -> None:
    """A span per event the outbox relay published, child of the span that
    staged it (its row's traceparent), from the batch's start to now."""
    for item, result in zip(items, outcome, strict=True):
        parent = context_of(item.headers.get(MESSAGE_HEADER))
        span = tracer().start_span(
            f"publish {item.routing_key}",
            context=parent,
            kind=SpanKind.PRODUCER,
            start_time=started_ns,
            attributes={"event.id": item.event_id, "outcome": result},
        )
        span.end()


def _exporter(service: str) -> SpanExporter | None:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    directory = os.environ.get(TRACES_DIR)
    if directory:
        return FileSpanExporter(Path(directory) / f"{service}.jsonl")
    return None


def tracer() -> trace.Tracer:
    return trace.get_tracer("fintech")


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent (None outside any recorded span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(HEADER)


def context_of(traceparent: str | None) -> context.Context | None:
    """The remote parent a traceparent names (None if absent or malformed)."""
    if not isinstance(traceparent, str) or not traceparent:
        return None
    extracted = _propagator.extract({HEADER: traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, hex, for log lines."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def end(span: trace.Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def attributes_of_event(envelope) -> dict[str, str]:
    """What a span of an event's handler is found by: event, correlation, transfer."""
    found: dict[str, str] = {}
    if not isinstance(envelope, Mapping):
        return found
    for key, name in (("event_id", "event.id"), ("type", "event.type")):
        if isinstance(envelope.get(key), str):
            found[name] = envelope[key]
    payload = envelope.get("payload")
    if isinstance(payload, Mapping) and isinstance(payload.get("transfer_id"), str):
        found["transfer_id"] = payload["transfer_id"]
    return found


class FileSpanExporter(SpanExporter):
    """Spans as JSON lines in a file, for `python -m shared.traces`."""

    def __init__(self, path: Path):
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "name": span.name,
                        "kind": span.kind.name.lower(),
                        "service": span.resource.attributes.get("service.name"),
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "status": span.status.status_code.name.lower(),
                        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                    },
                    sort_keys=True,
                )
            )
        try:
            with self._path.open("a", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
        except OSError:
            log.warning("could not write spans to %s", self._path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


KINDS = {"rpc": SpanKind.SERVER, "event": SpanKind.CONSUMER}


class TracedEntrypoints(DependencyProvider):
    """A span per entrypoint call of this service, child of the caller's.

    worker_setup runs in the worker's greenthread after the dependencies are
    injected (the correlation id is bound by then) and before the method;
    worker_result after it. The span is made current for the method, and
    its traceparent replaces the caller's in the worker's context data, so
    what the method sends (RPC, events, outbox rows) names it as parent."""

    def setup(self):
        self.enabled = setup(self.container.service_name)
        self._open: dict[int, tuple[trace.Span, object]] = {}

    def worker_setup(self, worker_ctx):
        if not self.enabled:
            return
        entrypoint = worker_ctx.entrypoint
        kind = entrypoint_kind(entrypoint)
        attributes = {
            "entrypoint": entrypoint.method_name,
            "entrypoint.kind": kind,
            "correlation_id": worker_ctx.data.get(correlation.CONTEXT_KEY) or "",
        }
        if kind == "event" and worker_ctx.args:
            attributes.update(attributes_of_event(worker_ctx.args[0]))
        span = tracer().start_span(
            f"{self.container.service_name}.{entrypoint.method_name}",
            context=context_of(worker_ctx.data.get(CONTEXT_KEY)),
            kind=KINDS.get(kind, SpanKind.INTERNAL),
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span))
        worker_ctx.data[CONTEXT_KEY] = current_traceparent()
        self._open[id(worker_ctx)] = (span, token)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        opened = self._open.pop(id(worker_ctx), None)
        if opened is None:
            return
        span, token = opened
        if isinstance(result, Mapping) and isinstance(result.get("transfer_id"), str):
            span.set_attribute("transfer_id", result["transfer_id"])
        end(span, exc_info[1] if exc_info else None)
        context.detach(token)  # the worker's greenthread, as in worker_setup


def entrypoint_kind(entrypoint) -> str:
    """rpc, event, timer (or the entrypoint class's name): the label of its metrics."""
    if isinstance(entrypoint, Rpc):
        return "rpc"
    if isinstance(entrypoint, EventHandler):
        return "event"
    if isinstance(entrypoint, Timer):
        return "timer"
    return type(entrypoint).__name__.lower()

"""Logs that carry the service and the correlation id: JSON for machines,
aligned coloured lines for a person at a terminal.

LOG_FORMAT picks: `json` (containers, files, pipes), `text` (one readable
line: time, service, level, correlation id, message, then the record's
other fields as key=value), or `auto`, the default: text when the process
writes to a terminal, JSON otherwise. `make run` sets `text` when it runs in
a terminal itself (its processes write to supervisord's pipes). NO_COLOR
turns the colours off.
"""

import logging
import os
import sys
import time

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from shared import correlation, tracing

_process_service = os.environ.get("SERVICE_NAME", "fintech")


def set_process_service(name: str) -> None:
    """Name used on log lines emitted outside a worker (start-up, timers)."""
    global _process_service
    _process_service = name


class ContextFilter(logging.Filter):
    """Stamps every record with the service and the current correlation id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = correlation.service() or _process_service
        record.correlation_id = correlation.current()
        found = tracing.ids()  # inside a recorded span (shared/tracing.py)
        if found is not None:
            record.trace_id, record.span_id = found
        return True


class TraceSummaryFilter(logging.Filter):
    """Reduces nameko-tracer records to what is safe and useful to keep.

    The tracer attaches each entrypoint's arguments and result, which here
    include passwords, tokens and MFA secrets. Only the outcome survives:
    one line per call (the result stage) with entrypoint, status, duration,
    call id and, on failure, the error type. Never arguments or results.
    """

    # What nameko-tracer's adapter attaches to each record besides the trace.
    _RAW_EXTRAS = ("stage", "worker_ctx", "result", "exc_info_", "timestamp", "response_time")

    def filter(self, record: logging.LogRecord) -> bool:
        trace = record.__dict__.pop("nameko_trace", None)
        if trace is None:
            return True
        for name in self._RAW_EXTRAS:
            record.__dict__.pop(name, None)
        if trace.get("stage") != "response":
            return False
        record.msg, record.args = "entrypoint", ()
        record.entrypoint = f"{trace.get('entrypoint_type')}:{trace.get('entrypoint_name')}"
        record.status = trace.get("response_status")
        record.duration_ms = round(float(trace.get("response_time") or 0) * 1000, 2)
        record.call_id = trace.get("call_id")
        if trace.get("exception_type"):
            record.error = trace["exception_type"]
            record.error_expected = trace.get("exception_expected")
        return True


class JsonFormatter(_BaseJsonFormatter):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault(
            "fmt", "%(asctime)s %(levelname)s %(name)s %(service)s %(correlation_id)s %(message)s"
        )
        kwargs.setdefault(
            "rename_fields", {"asctime": "ts", "levelname": "level", "name": "logger"}
        )
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S%z")
        super().__init__(*args, **kwargs)


# What every LogRecord has; the rest of a record's attributes are its fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "service",
    "correlation_id",
    # In every JSON line inside a span; a terminal's reader has the
    # correlation id, and `python -m shared.traces` for the trace.
    "trace_id",
    "span_id",
}
_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}


class TextFormatter(logging.Formatter):
    """`12:01:46.123 accounts      INFO     4f3a2b1c  message  key=value ...`"""

    def __init__(self, colour: bool = True):
        super().__init__()
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f"{record.levelname:<8}"
        if self._colour:
            level = f"\033[{_COLOURS.get(record.levelname, '0')}m{level}\033[0m"
        correlation_id = (getattr(record, "correlation_id", None) or "-")[:8]
        fields = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and value is not None
        )
        service = getattr(record, "service", "-")
        line = f"{stamp}.{int(record.msecs):03d} {service:<13} {level} {correlation_id:<8}  "
        line += record.getMessage() + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT asks for (see the module's docstring)."""
    choice = os.environ.get("LOG_FORMAT", "auto").lower()
    if choice == "auto":
        choice = "text" if sys.stderr.isatty() else "json"
    if choice == "text":
        return TextFormatter(colour="NO_COLOR" not in os.environ)
    return JsonFormatter()


def configure(service: str, level: str | None = None) -> None:
    """Logging for processes not started by `nameko run` (gateway, CLIs)."""
    set_process_service(service)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
    for noisy in ("kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Structured JSON logs that carry the service and the correlation id."""

import logging
import os

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from shared import correlation

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


def configure(service: str, level: str | None = None) -> None:
    """JSON logging for processes not started by `nameko run` (gateway, CLIs)."""
    set_process_service(service)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
    for noisy in ("kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

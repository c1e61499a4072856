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

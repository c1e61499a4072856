"""Log lines: JSON for machines, one readable line for a person (shared.logs)."""

import json
import logging

from shared import logs


def record(**fields) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "gateway.access", "levelname": "WARNING", "levelno": 30, "msg": "request"}
    )
    for key, value in {"service": "gateway", "correlation_id": "4f3a2b1c-9d", **fields}.items():
        setattr(made, key, value)
    return made


def test_a_person_reads_time_service_level_correlation_message_then_fields():
    line = logs.TextFormatter(colour=False).format(record(status=503, user_id=None, path="/v1/x"))
    _, rest = line.split(" ", 1)
    assert rest == "gateway       WARNING  4f3a2b1c  request  status=503 path=/v1/x"


def test_colour_marks_the_level_only():
    line = logs.TextFormatter(colour=True).format(record())
    assert "\033[33mWARNING \033[0m" in line and line.endswith("request")


def test_json_unless_asked_or_at_a_terminal(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "auto")  # pytest captures: not a terminal
    assert isinstance(logs.formatter(), logs.JsonFormatter)
    assert json.loads(logs.formatter().format(record()))["correlation_id"] == "4f3a2b1c-9d"
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("NO_COLOR", "1")
    text = logs.formatter()
    assert isinstance(text, logs.TextFormatter)
    assert "\033[" not in text.format(record())

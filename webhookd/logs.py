"""Logging setup: readable text by default, one JSON object per line with ``WEBHOOKD_LOG_FORMAT=json``."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

import orjson

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("webhookd_request_id", default="-")
"""The id of the HTTP request being handled; set by the request-context middleware."""


class ContextFilter(logging.Filter):
    """Gives every record a stable ``action`` (the logger's name unless the call set one) and the
    current request id, so every line, ours or a library's, can be traced and grouped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "action"):
            record.action = record.name
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """Every line: time, level, logger, a stable ``action`` and the message, plus any extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "action": getattr(record, "action", record.name),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(action)s [%(request_id)s] %(message)s")


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

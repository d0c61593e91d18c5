"""Structured JSON logs: one line per request, the same fields in both colors.

Secrets never reach a log line: API keys are not logged at all, and the only request data in an
access line is the method, path, status, duration, request id and color.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

ACCESS = logging.getLogger("chatbot.access")


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at emit time (test runners swap it)."""

    @property
    def stream(self) -> object:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _ColorFilter(logging.Filter):
    def __init__(self, color: str) -> None:
        super().__init__()
        self.color = color

    def filter(self, record: logging.LogRecord) -> bool:
        record.color = self.color
        return True


def configure(color: str, level: str = "INFO") -> None:
    """JSON lines on stdout for the ``chatbot`` loggers (idempotent)."""
    logger = logging.getLogger("chatbot")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = _Stdout()
    handler.setFormatter(JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="ts",
    ))
    handler.addFilter(_ColorFilter(color))
    logger.addHandler(handler)


def access(*, request_id: str, method: str, path: str, status: int, duration_ms: float,
           client: str | None = None) -> None:
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info("request", extra={
            "request_id": request_id, "method": method, "path": path[:256], "status": status,
            "duration_ms": round(duration_ms, 3), "client": client,
        })

"""Structured logs: one JSON object per line, with the tenant, kind, namespace and name of the
object a record is about (passed as `extra`). Enabled with STOCKADE_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
from typing import Any

FIELDS = ("tenant", "kind", "namespace", "name")
# LogRecord attributes of their own ("name" is the logger's): the fields travel prefixed.
PREFIX = "object_"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if hasattr(record, PREFIX + field):
                entry[field] = getattr(record, PREFIX + field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def about(
    tenant: str, kind: str | None = None, namespace: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """The `extra` of a log record about one object."""
    fields = {"tenant": tenant, "kind": kind, "namespace": namespace, "name": name}
    return {PREFIX + k: v for k, v in fields.items() if v is not None}


def configure(log_format: str) -> None:
    if log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("stockade")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)

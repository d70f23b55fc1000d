"""Structured JSON logs that Cloud Logging understands.

Cloud Functions ships each stdout line to Cloud Logging; a JSON line is parsed into a
structured entry, with `severity`, `message` and `logging.googleapis.com/labels` given
their special meaning. Prompts and secrets never go into INFO lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

_LABELS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "bananabatch_log_labels", default=MappingProxyType({})
)
_RESERVED: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_CONFIGURED = False


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line: severity, message, time, labels, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARN" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = dict(_LABELS.get())
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            if key in {"job_id", "batch_id", "batch_name", "execution_id", "key"}:
                labels[key] = str(value)
            else:
                entry[key] = value
        if labels:
            entry["logging.googleapis.com/labels"] = labels
            entry.update({k: v for k, v in labels.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", stream: Any = None, *, replace: bool = False) -> None:
    """Install the JSON handler on the package logger once per process. replace=True
    redirects it (the CLI sends pipeline logs to a file so they don't bury its output)."""
    global _CONFIGURED
    logger = logging.getLogger("bananabatch")
    logger.setLevel(level.upper())
    if _CONFIGURED and not replace:
        return
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("bananabatch") else f"bananabatch.{name}")


@contextmanager
def labels(**values: str | None) -> Iterator[None]:
    """Attach labels (job id, batch name, execution id) to every line logged inside."""
    merged = {**_LABELS.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _LABELS.set(merged)
    try:
        yield
    finally:
        _LABELS.reset(token)

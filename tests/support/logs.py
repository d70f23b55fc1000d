"""Log records as Cloud Logging would receive them, for tests that assert on the fields an
alert policy matches."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from bananabatch.log import CloudLoggingFormatter


class LogRecords(logging.Handler):
    """Every record of one logger, formatted by the production JSON formatter and parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []
        self.setFormatter(CloudLoggingFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def with_message(self, message: str) -> list[dict[str, object]]:
        return [line for line in self.lines if line["message"] == message]


@contextmanager
def captured(logger_name: str) -> Iterator[LogRecords]:
    records = LogRecords()
    logger = logging.getLogger(logger_name)
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)

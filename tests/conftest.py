"""Suite-wide rule: an ERROR logged anywhere fails the test (discord.py logs, not raises)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[ErrorRecords]:
    """Tests that provoke an ERROR on purpose take this fixture and clear what they expected."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    if handler.records:
        lines = [f"{r.name}: {r.getMessage()}" for r in handler.records]
        pytest.fail("ERROR logged during the test:\n" + "\n".join(lines), pytrace=False)

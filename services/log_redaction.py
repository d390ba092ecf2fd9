"""Blank secrets in log records, whatever library formats them and whichever handler writes them.

Redaction happens when a record is created (a wrapped ``logging`` record factory), not in handler
filters: a filter only guards the handlers present when it was added, and handlers come and go
(``discord.utils.setup_logging``, pytest's capture, an operator's config). Records a logger drops
for their level are never created, so the cost falls only on lines that are written.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[redacted]"
#: Short values would blank ordinary words; real tokens and keys are long.
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_secrets: Counter[str] = Counter()
_ordered: tuple[str, ...] = ()
_factory_installed = False


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every installed secret (or each of ``secrets``) replaced."""
    for secret in _ordered if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_record(record: logging.LogRecord, secrets: Iterable[str] | None = None) -> None:
    """Rewrite a record in place: message, traceback text and stack text."""
    secrets = tuple(_ordered if secrets is None else secrets)
    if not secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: the handler reports it, with the raw msg and args
        message = None
    if message is not None:
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text, secrets)
    if record.stack_info:
        record.stack_info = redact(record.stack_info, secrets)


def _sorted(values: Iterable[str]) -> tuple[str, ...]:
    """Longest first, so a secret containing another is blanked whole."""
    return tuple(sorted(values, key=len, reverse=True))


def install(secrets: Iterable[str]) -> Callable[[], None]:
    """Redact ``secrets`` from every record created from now on; returns the undo function.

    Installs can overlap (two bots in one test process): each secret stays redacted until every
    install that added it is undone.
    """
    global _ordered, _factory_installed
    added = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]
    with _lock:
        _secrets.update(added)
        _ordered = _sorted(_secrets)
        if not _factory_installed:
            _wrap_factory()
            _factory_installed = True
    undone = False

    def uninstall() -> None:
        global _ordered
        nonlocal undone
        with _lock:
            if undone:
                return
            undone = True
            _secrets.subtract(added)
            for secret in [s for s, count in _secrets.items() if count <= 0]:
                del _secrets[secret]
            _ordered = _sorted(_secrets)

    return uninstall


def _wrap_factory() -> None:
    """Wrap whatever factory is current; left in place for good (it is a no-op with no secrets)."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _ordered:
            redact_record(record)
        return record

    logging.setLogRecordFactory(factory)

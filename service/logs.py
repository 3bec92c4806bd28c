"""Log setup shared by the API and the workers: plain text, or one JSON object per line (``SSAH_LOG_FORMAT=json``).

The ids a line belongs to (request, job, tenant) live in a context variable, set by the request
middleware, the authentication dependency and ``worker.runner.run_job``, so a line logged deep
in a library call carries them without being handed them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar

IDS = ("request_id", "job_id", "tenant_id")
_ids: ContextVar[dict[str, str]] = ContextVar("ssah_log_ids", default={})  # noqa: B039 - never mutated, replaced


def current_ids() -> dict[str, str]:
    """The ids (``request_id``, ``job_id``, ``tenant_id``) known where this is called."""
    return dict(_ids.get())


def bind(**ids: object) -> None:
    """Add ``ids`` to the current context until whoever opened it (``context``) closes it."""
    _ids.set({**_ids.get(), **{name: str(value) for name, value in ids.items() if value is not None}})


@contextlib.contextmanager
def context(**ids: object) -> Iterator[None]:
    """Log lines inside carry ``ids``; on leaving, the ids before it are back (also those ``bind`` added)."""
    token = _ids.set({**_ids.get(), **{name: str(value) for name, value in ids.items() if value is not None}})
    try:
        yield
    finally:
        _ids.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message, the known ids, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = _ids.get()
        for name in IDS:
            value = getattr(record, name, None) or ids.get(name)  # extra={"job_id": ...} wins
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure(log_format: str, level: str | int) -> None:
    """Log to stderr at ``level``, as text or (``json``) one object per line; idempotent.

    JSON takes over the root logger's plain stderr handler, so every library's lines (uvicorn,
    Celery, SQLAlchemy) come out the same way; handlers others added (pytest's) are left alone.
    """
    if log_format != "json":
        logging.basicConfig(level=level)
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # basicConfig's, or ours from an earlier call
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)

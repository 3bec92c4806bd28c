"""Credentials never reach a log line or an answer: ``scheme://user:secret@host`` becomes ``scheme://user:***@host``.

Settings hold URLs with passwords (``SSAH_BROKER_URL=redis://:PASSWORD@host/0``, a PostgreSQL URL,
an ``s3://key:secret@bucket`` artifact store). Code that names a URL passes it through
``redact``; ``install`` also redacts every log record of the process as it is created (whoever
logs it: our code, Celery, kombu, redis-py), so a forgotten call site cannot leak one either.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# userinfo with a password: scheme://[user]:password@ (the password may hold anything but '@', '/' and spaces)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<secret>[^\s@/]+)@")
# and credentials passed as query parameters (?password=..., &secret=..., token=...)
_QUERY = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|secret|token|access_key|secret_key)=)(?P<secret>[^&\s#]+)", re.IGNORECASE
)

_installed = False


def redact(text: object) -> str:
    """``text`` (a URL, a message, an exception) with every credential in a URL masked."""
    value = str(text)
    if "://" not in value and "=" not in value:
        return value
    value = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", value)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", value)


def install() -> None:
    """Redact the message of every log record this process creates (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(redacting)
    _installed = True

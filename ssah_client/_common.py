"""What the sync and async clients share: settings, request preparation, answers to records or errors."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .errors import ProblemError, problem_error, retry_after

RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = "ssah-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls (GETs, POSTs with an Idempotency-Key) on 429, 503 and lost connections.

    ``Retry-After`` gives the wait when the server names one, else ``backoff * 2**attempt``; a wait
    past ``max_wait`` is not waited for: the error is raised at once, with its ``retry_after``.
    """

    retries: int = 3
    backoff: float = 0.5
    max_wait: float = 60.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt >= self.retries:
            return None
        hinted = retry_after(dict(response.headers)) if response is not None else None
        wait = hinted if hinted is not None else self.backoff * 2**attempt
        return wait if wait <= self.max_wait else None


def settings(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The server URL and key: as given, else ``SSAH_SERVER`` and ``SSAH_API_KEY``."""
    url = url or os.environ.get("SSAH_SERVER")
    if not url:
        raise ValueError("no server URL: pass url= or set SSAH_SERVER")
    return url.rstrip("/"), key or os.environ.get("SSAH_API_KEY")


def headers(key: str | None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def new_idempotency_key() -> str:
    """A fresh key per create call: its retries replay the first answer instead of creating twice."""
    return f"ssah-client-{uuid.uuid4()}"


def error_of(response: httpx.Response) -> ProblemError:
    """The typed exception of an error answer (a body that is not problem+json still makes one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500] or response.reason_phrase}
    return problem_error(response.status_code, body, dict(response.headers))


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Query parameters without the unset ones; datetimes as ISO 8601."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in values.items() if v is not None}


def job_id(job: Any) -> str:
    """The id of a job given as a Job, a dict or an id."""
    if isinstance(job, (str, uuid.UUID)):
        return str(job)
    if isinstance(job, dict):
        return str(job["id"])
    return str(job.id)


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def target_path(dest: str | os.PathLike[str], response: httpx.Response, fallback: str) -> Path:
    """Where a download goes: ``dest``, or the server's file name inside ``dest`` when it is a directory."""
    path = Path(dest)
    if path.is_dir():
        match = _FILENAME.search(response.headers.get("content-disposition", ""))
        path = path / Path(match.group(1) if match else fallback).name
    return path


def model_body(name: str, source: str, labels: dict[str, str] | None) -> dict[str, Any]:
    """The body of ``POST /v1/models``."""
    body: dict[str, Any] = {"name": name, "source": source}
    if labels:
        body["labels"] = dict(labels)
    return body


def series_body(
    order_by: str, labels: dict[str, str] | None, model_ids: list[str] | None, compare: bool
) -> dict[str, Any]:
    """The body of ``POST /v1/series``."""
    body: dict[str, Any] = {"order_by": order_by, "labels": dict(labels or {}), "compare": compare}
    if model_ids is not None:
        body["model_ids"] = [str(m) for m in model_ids]
    return body

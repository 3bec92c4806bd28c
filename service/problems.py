"""The errors the service reports to callers, each carrying its HTTP status: no web framework here.

The worker raises some of them too (a cancel that lost its race is a ``Conflict``), so they live
apart from the FastAPI handlers in ``service/errors.py`` that render them as problem+json.
"""

from __future__ import annotations

from typing import Any


class ProblemError(Exception):
    """An error the API reports to its caller; subclasses set ``status``, ``title`` and ``slug``."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(ProblemError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="ssah"'})


class NotFound(ProblemError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class JobNotReady(Conflict):
    title, slug = "Job Not Succeeded", "job-not-succeeded"


class ContentTooLarge(ProblemError):
    status, title, slug = 413, "Content Too Large", "content-too-large"


class Unprocessable(ProblemError):
    status, title, slug = 422, "Unprocessable Content", "unprocessable"

    @classmethod
    def field(cls, loc: str, msg: str) -> Unprocessable:
        """An error about one field of the request, named by its dotted path (``body.model_id``)."""
        return cls(f"{loc}: {msg}", extra={"errors": [{"loc": loc, "msg": msg, "type": "value_error"}]})


class IdempotencyConflict(Unprocessable):
    title, slug = "Idempotency Key Reused", "idempotency-key-reused"


class ServiceUnavailable(ProblemError):
    status, title, slug = 503, "Service Unavailable", "unavailable"

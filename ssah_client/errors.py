"""The API's problem+json answers as exceptions, one class per kind of problem.

Each carries the problem's fields (``status``, ``type``, ``title``, ``detail``, ``request_id``) and
the whole document in ``problem``; the classes a caller acts on add their hints.
"""

from __future__ import annotations

from typing import Any


class SSAHError(Exception):
    """Anything this client raises on purpose."""


class ProblemError(SSAHError):
    """An error answer of the API (RFC 9457 problem+json)."""

    def __init__(self, status: int, problem: dict[str, Any], *, headers: dict[str, str] | None = None):
        self.status = status
        self.problem = problem
        self.headers = headers or {}
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", self.title))
        self.request_id: str | None = problem.get("request_id")
        super().__init__(f"{status} {self.title}: {self.detail}" if self.title else f"{status}: {self.detail}")

    @property
    def slug(self) -> str:
        """The last part of ``type``: ``urn:ssah:problem:not-found`` is ``not-found``."""
        return self.type.rsplit(":", 1)[-1]


class BadRequest(ProblemError):
    """400: the request could not be read."""


class Unauthorized(ProblemError):
    """401: no key, or an unknown or revoked one."""


class NotFound(ProblemError):
    """404: no such resource for this tenant."""


class Conflict(ProblemError):
    """409: the resource's state forbids the request (finished job, taken name, key in progress)."""


class JobNotSucceeded(Conflict):
    """409: results exist only once the job has succeeded; ``job_status`` says where it stands."""

    @property
    def job_status(self) -> str | None:
        return self.problem.get("job_status")


class _Limit:
    """The deployment limit a problem names: ``limit`` (the setting) and ``limit_value`` (its value)."""

    problem: dict[str, Any]

    @property
    def limit(self) -> str | None:
        return self.problem.get("limit")

    @property
    def limit_value(self) -> Any:
        return self.problem.get("limit_value")


class ContentTooLarge(_Limit, ProblemError):
    """413: past a body, upload or row limit; ``limit`` names the setting, ``limit_value`` its value."""


class ValidationFailed(ProblemError):
    """422: the request is invalid; ``errors`` lists ``{"loc", "msg", "type"}`` per field."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors") or [])


class LimitExceeded(_Limit, ValidationFailed):
    """422: past a deployment limit (``limit``, ``limit_value``)."""


class ModelSourceRefused(ValidationFailed):
    """422: the deployment's model policy refuses the source; ``rule`` names the rule."""

    @property
    def rule(self) -> str | None:
        return self.problem.get("rule")


class IdempotencyKeyReused(ValidationFailed):
    """422: the Idempotency-Key was first used with a different request."""


class Retryable(ProblemError):
    """An answer worth retrying after ``retry_after`` seconds (None when the server named no delay)."""

    @property
    def retry_after(self) -> float | None:
        return retry_after(self.headers)


class RateLimited(Retryable):
    """429: the key's rate limit, or the tenant's concurrent-job limit."""


class Unavailable(Retryable):
    """503: the database (or another dependency) is unreachable for now."""


class ServerError(ProblemError):
    """500 and other 5xx: a bug or an outage; quote ``request_id`` when reporting it."""


class WaitTimeout(SSAHError, TimeoutError):
    """``wait`` gave up before the job reached a terminal state; ``job`` is its last known state."""

    def __init__(self, job: Any, timeout: float):
        self.job, self.timeout = job, timeout
        super().__init__(f"{job.kind} {job.id} still {job.status} after {timeout:g}s")


BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: ContentTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}
BY_SLUG: dict[str, type[ProblemError]] = {
    "job-not-succeeded": JobNotSucceeded,
    "limit-exceeded": LimitExceeded,
    "model-source-refused": ModelSourceRefused,
    "idempotency-key-reused": IdempotencyKeyReused,
}


def retry_after(headers: dict[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; an HTTP date counts as unknown)."""
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def problem_error(status: int, problem: dict[str, Any], headers: dict[str, str]) -> ProblemError:
    """The exception for an error answer: by status, refined by the problem's type where it names one."""
    base = BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    refined = BY_SLUG.get(str(problem.get("type", "")).rsplit(":", 1)[-1])
    # "limit-exceeded" is a 413, a 422 or a 429: the status decides what a caller does about it.
    cls = refined if refined is not None and issubclass(refined, base) else base
    return cls(status, problem, headers=headers)

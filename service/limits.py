"""Deployment limits on what one request may ask for and how much one tenant may run at once.

Every refusal is a problem+json whose body names the limit (its ``SSAH_*`` setting) and its value,
so a client can tell "ask for less" (413/422) from "wait and retry" (429).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Job, JobStatus, Tenant
from service.problems import ProblemError
from service.settings import Settings

ACTIVE_STATUSES = (JobStatus.queued.value, JobStatus.running.value)
# Request fields measured in tokens, per job kind (the engine's own names).
SEQUENCE_FIELDS = {
    "audit": ("max_length",),
    "evaluation": ("max_new_tokens",),
    "finetune": ("max_length",),
    "probe": ("max_length",),
}
SAMPLE_FIELDS = {"audit": ("samples",), "evaluation": ("samples",), "probe": ("queries", "calibration")}
# (setting, the request fields it bounds per job kind, its unit in messages)
SIZE_LIMITS = (
    ("max_sequence_length", SEQUENCE_FIELDS, "tokens"),
    ("max_samples_per_request", SAMPLE_FIELDS, "samples per request"),
)


class LimitExceeded(ProblemError):
    """A request past a deployment limit; the body carries ``limit`` (the setting) and ``limit_value``."""

    slug = "limit-exceeded"
    titles: ClassVar[dict[int, str]] = {413: "Content Too Large", 422: "Limit Exceeded", 429: "Too Many Requests"}

    def __init__(
        self,
        status: int,
        limit: str,
        value: int,
        detail: str,
        *,
        loc: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        extra: dict[str, Any] = {"limit": limit, "limit_value": value}
        if loc is not None:
            extra["errors"] = [{"loc": loc, "msg": detail, "type": "limit_exceeded"}]
        super().__init__(detail, extra=extra, headers=headers)
        self.status, self.title = status, self.titles[status]


def check_job_request(
    session: Session, settings: Settings, *, tenant_id: uuid.UUID, kind: str, params: dict[str, Any]
) -> None:
    """Refuse a job submission past a size limit (422) or the tenant's concurrency limit (429)."""
    for limit, fields, unit in SIZE_LIMITS:
        ceiling = getattr(settings, limit)
        for name in fields.get(kind, ()):
            value = params.get(name)
            if value is not None and value > ceiling:
                raise LimitExceeded(
                    422,
                    limit,
                    ceiling,
                    f"{name}={value} exceeds this deployment's limit of {ceiling} {unit} ({limit})",
                    loc=f"body.{name}",
                )
    check_concurrent_jobs(session, settings, tenant_id=tenant_id)


def check_concurrent_jobs(session: Session, settings: Settings, *, tenant_id: uuid.UUID) -> None:
    """429 when the tenant already has ``max_concurrent_jobs_per_tenant`` jobs queued or running."""
    limit = settings.max_concurrent_jobs_per_tenant
    if limit <= 0:
        return
    # Lock the tenant row: concurrent submissions of one tenant count one after the other, so two
    # requests cannot both see limit-1 active jobs. Other tenants are not blocked.
    if session.get_bind().dialect.name == "sqlite":
        # FOR UPDATE is a no-op on SQLite. A write takes the database's write lock instead, held to
        # commit: the next submitter's count waits for this one's job (embedded mode, one process).
        session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(name=Tenant.name)
            .execution_options(synchronize_session=False)
        )
    else:
        session.execute(sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    active = (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
        )
        or 0
    )
    if active >= limit:
        raise LimitExceeded(
            429,
            "max_concurrent_jobs_per_tenant",
            limit,
            f"this tenant already has {active} jobs queued or running; the limit is {limit} "
            "(max_concurrent_jobs_per_tenant). Retry when one has finished, or cancel one.",
            headers={"Retry-After": "30"},
        )

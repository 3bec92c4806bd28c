"""Helpers shared by the job routers: filters, lookups that 404 across tenants, result guards."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service import queries
from service.api.deps import Idempotency, PageParams, make_page
from service.auth import Principal
from service.errors import JobNotReady, NotFound, Unprocessable
from service.jobs import cancel_job
from service.models import Job, JobStatus
from service.schemas.jobs import JobRead, JobStatusName


class JobFilters(BaseModel):
    status: JobStatusName | None = None
    model_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _job_filters(
    status: Annotated[JobStatusName | None, Query()] = None,
    model_id: Annotated[uuid.UUID | None, Query()] = None,
    created_after: Annotated[datetime | None, Query(description="ISO 8601; exclusive.")] = None,
    created_before: Annotated[datetime | None, Query(description="ISO 8601; exclusive.")] = None,
) -> JobFilters:
    return JobFilters(status=status, model_id=model_id, created_after=created_after, created_before=created_before)


JobFiltersDep = Annotated[JobFilters, Depends(_job_filters)]


def job_page(
    request: Request, session: Session, principal: Principal, page: PageParams, filters: JobFilters,
    *, kind: str | None,
) -> dict[str, object]:
    """One page of the caller's jobs of ``kind`` (all kinds when None) matching ``filters``."""
    items, total = queries.list_jobs(
        session, tenant_id=principal.tenant_id, kind=kind, limit=page.limit, offset=page.offset,
        **filters.model_dump(),
    )
    return make_page(request, [JobRead.model_validate(j) for j in items], total, page)


def load_job(session: Session, principal: Principal, job_id: uuid.UUID, *, kind: str | None) -> Job:
    """The caller's job ``job_id``; 404 when absent or another tenant's (ids must not leak)."""
    job = queries.get_job(session, tenant_id=principal.tenant_id, job_id=job_id, kind=kind)
    if job is None:
        raise NotFound(f"no {kind or 'job'} {job_id}")
    return job


def require_succeeded(job: Job) -> Job:
    """409 unless ``job`` has succeeded: results exist only then."""
    if job.status != JobStatus.succeeded.value:
        raise JobNotReady(f"{job.kind} {job.id} is {job.status}; results exist once it has succeeded",
                          extra={"job_status": job.status})
    return job


def require_model(session: Session, principal: Principal, model_id: uuid.UUID, *, loc: str = "body.model_id") -> None:
    """422 naming ``loc`` unless the caller registered model ``model_id``."""
    if queries.get_model(session, tenant_id=principal.tenant_id, model_id=model_id) is None:
        raise Unprocessable.field(loc, f"no model {model_id}")


def require_dataset(session: Session, principal: Principal, dataset_id: uuid.UUID | None, *, loc: str) -> None:
    """422 naming ``loc`` unless ``dataset_id`` is None or one of the caller's datasets."""
    if dataset_id is not None and queries.get_dataset(
        session, tenant_id=principal.tenant_id, dataset_id=dataset_id
    ) is None:
        raise Unprocessable.field(loc, f"no dataset {dataset_id}")


def require_audit(session: Session, principal: Principal, audit_id: uuid.UUID, *, loc: str) -> Job:
    """The caller's succeeded audit ``audit_id``: 422 naming ``loc`` if absent, 409 if not succeeded."""
    audit = queries.get_job(session, tenant_id=principal.tenant_id, job_id=audit_id, kind="audit")
    if audit is None:
        raise Unprocessable.field(loc, f"no audit {audit_id}")
    return require_succeeded(audit)


def cancel_response(idem: Idempotency, session: Session, principal: Principal, job_id: uuid.UUID,
                    *, kind: str | None) -> JSONResponse:
    """Cancel the caller's job and answer 200 with it (replayed under an Idempotency-Key)."""
    if (replay := idem.replay({})) is not None:
        return replay
    job = cancel_job(session, job=load_job(session, principal, job_id, kind=kind))
    return idem.respond(200, JobRead.model_validate(job))

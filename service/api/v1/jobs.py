"""Jobs of every kind through one collection: list, poll, cancel, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, poll_job
from service.api.v1.common import JobFiltersDep, cancel_response, delete_job_response, job_page
from service.schemas.common import NOT_MODIFIED, Page, problem_responses
from service.schemas.jobs import JobKindName, JobRead

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401, 422))


@router.get("", response_model=Page[JobRead])
def list_jobs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    filters: JobFiltersDep,
    kind: Annotated[JobKindName | None, Query()] = None,
):
    """List the tenant's jobs of every kind, newest first."""
    return job_page(request, session, principal, page, filters, kind=kind)


@router.get("/{job_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_job(request: Request, job_id: uuid.UUID, principal: PrincipalDep):
    """Get one job of any kind; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, job_id, kind=None)


@router.post("/{job_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_job(job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel a job: at once when queued, by request when running; 409 once finished."""
    return cancel_response(idem, session, principal, job_id, kind=None)


@router.delete("/{job_id}", status_code=204, responses=problem_responses(404, 409))
def delete_job(request: Request, job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished job of any kind with its results and artifacts (409 while it or a user of it is active)."""
    return delete_job_response(request, session, principal, job_id, kind=None)

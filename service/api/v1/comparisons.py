"""Comparisons: how units changed role between two audits."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from service import queries
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, poll_job
from service.api.v1.common import (
    JobFiltersDep,
    cancel_response,
    delete_job_response,
    job_page,
    load_job,
    require_audit,
    require_succeeded,
    submit_job,
)
from service.errors import NotFound
from service.schemas import examples
from service.schemas.common import NOT_MODIFIED, Page, problem_responses
from service.schemas.examples import request_examples
from service.schemas.jobs import ComparisonCreate, JobRead
from service.schemas.results import ComparisonRead

router = APIRouter(prefix="/comparisons", tags=["comparisons"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.COMPARISON),
)
def create_comparison(
    request: Request, body: ComparisonCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Queue a comparison of two succeeded audits; answers 202 with the job."""
    if (replay := idem.replay(body)) is not None:
        return replay
    before = require_audit(session, principal, body.before_audit_id, loc="body.before_audit_id")
    require_audit(session, principal, body.after_audit_id, loc="body.after_audit_id")
    return submit_job(
        request,
        session,
        principal,
        idem,
        kind="comparison",
        body=body,
        model_id=before.model_id,
        collection="comparisons",
    )


@router.get("", response_model=Page[JobRead])
def list_comparisons(
    request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, filters: JobFiltersDep
):
    """List the tenant's comparisons, newest first, filtered by status, model and creation time."""
    return job_page(request, session, principal, page, filters, kind="comparison")


@router.get("/{comparison_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_comparison(request: Request, comparison_id: uuid.UUID, principal: PrincipalDep):
    """Get one comparison job; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, comparison_id, kind="comparison")


@router.post("/{comparison_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_comparison(comparison_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel a comparison: at once when queued, by request when running."""
    return cancel_response(idem, session, principal, comparison_id, kind="comparison")


@router.get("/{comparison_id}/result", response_model=ComparisonRead, responses=problem_responses(404, 409))
def get_comparison_result(comparison_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get the role cross-tab of a succeeded comparison."""
    job = require_succeeded(load_job(session, principal, comparison_id, kind="comparison"))
    result = queries.get_comparison(session, job_id=job.id)
    if result is None:
        raise NotFound(f"comparison {job.id} stored no result")
    return ComparisonRead.model_validate(result)


@router.delete("/{comparison_id}", status_code=204, responses=problem_responses(404, 409))
def delete_comparison(request: Request, comparison_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished comparison with its results and artifacts (409 while it or a job using it is queued or running)."""
    return delete_job_response(request, session, principal, comparison_id, kind="comparison")

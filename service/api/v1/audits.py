"""Audits: find a model's safety-critical, utility-critical, complex and redundant units."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, poll_job
from service.api.v1.common import (
    JobFiltersDep,
    cancel_response,
    delete_job_response,
    job_page,
    require_dataset,
    require_model,
    submit_job,
)
from service.schemas import examples
from service.schemas.common import NOT_MODIFIED, Page, problem_responses
from service.schemas.examples import request_examples
from service.schemas.jobs import AuditCreate, JobRead

router = APIRouter(prefix="/audits", tags=["audits"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.AUDIT),
)
def create_audit(
    request: Request, body: AuditCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Queue an audit of a registered model; answers 202 with the job."""
    if (replay := idem.replay(body)) is not None:
        return replay
    require_model(session, principal, body.model_id, settings=request.app.state.settings)
    require_dataset(session, principal, body.safety_dataset_id, loc="body.safety_dataset_id")
    require_dataset(session, principal, body.utility_dataset_id, loc="body.utility_dataset_id")
    return submit_job(
        request, session, principal, idem, kind="audit", body=body, model_id=body.model_id, collection="audits"
    )


@router.get("", response_model=Page[JobRead])
def list_audits(request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, filters: JobFiltersDep):
    """List the tenant's audits, newest first, filtered by status, model and creation time."""
    return job_page(request, session, principal, page, filters, kind="audit")


@router.get("/{audit_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_audit(request: Request, audit_id: uuid.UUID, principal: PrincipalDep):
    """Get one audit job; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, audit_id, kind="audit")


@router.post("/{audit_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_audit(audit_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel an audit: at once when queued, by request when running."""
    return cancel_response(idem, session, principal, audit_id, kind="audit")


@router.delete("/{audit_id}", status_code=204, responses=problem_responses(404, 409))
def delete_audit(request: Request, audit_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished audit with its results and artifacts (409 while it or a job using it is queued or running)."""
    return delete_job_response(request, session, principal, audit_id, kind="audit")

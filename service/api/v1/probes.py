"""Probes: the paper's reasoning-direction probe and the refusal direction of a model."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from service import queries
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, poll_job
from service.api.v1.common import (
    JobFiltersDep,
    cancel_response,
    delete_job_response,
    job_page,
    load_job,
    require_audit,
    require_dataset,
    require_model,
    require_succeeded,
    submit_job,
)
from service.artifacts import tenant_file
from service.errors import NotFound, Unprocessable
from service.schemas import examples
from service.schemas.common import NOT_MODIFIED, Page, binary_response, problem_responses
from service.schemas.examples import request_examples
from service.schemas.jobs import JobRead, ProbeCreate
from service.schemas.results import ProbeResultRead

router = APIRouter(prefix="/probes", tags=["probes"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.PROBE),
)
def create_probe(
    request: Request, body: ProbeCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Queue a probe of a registered model; answers 202 with the job."""
    if (replay := idem.replay(body)) is not None:
        return replay
    require_model(session, principal, body.model_id, settings=request.app.state.settings)
    if body.audit_id is not None:
        audit = require_audit(session, principal, body.audit_id, loc="body.audit_id")
        if audit.model_id != body.model_id:  # unit writes read the audited model's weights
            raise Unprocessable.field("body.audit_id", f"audit {body.audit_id} is of another model")
    require_dataset(session, principal, body.harmful_dataset_id, loc="body.harmful_dataset_id")
    require_dataset(session, principal, body.harmless_dataset_id, loc="body.harmless_dataset_id")
    return submit_job(
        request, session, principal, idem, kind="probe", body=body, model_id=body.model_id, collection="probes"
    )


@router.get("", response_model=Page[JobRead])
def list_probes(request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, filters: JobFiltersDep):
    """List the tenant's probes, newest first, filtered by status, model and creation time."""
    return job_page(request, session, principal, page, filters, kind="probe")


@router.get("/{probe_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_probe(request: Request, probe_id: uuid.UUID, principal: PrincipalDep):
    """Get one probe job; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, probe_id, kind="probe")


@router.post("/{probe_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_probe(probe_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel a probe: at once when queued, by request when running."""
    return cancel_response(idem, session, principal, probe_id, kind="probe")


@router.get("/{probe_id}/result", response_model=ProbeResultRead, responses=problem_responses(404, 409))
def get_probe_result(probe_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get what a succeeded probe measured: distance curves, the refusal direction, unit writes."""
    job = require_succeeded(load_job(session, principal, probe_id, kind="probe"))
    result = queries.get_probe_result(session, job_id=job.id)
    if result is None:
        raise NotFound(f"probe {job.id} stored no result")
    return ProbeResultRead.model_validate(result)


@router.get(
    "/{probe_id}/direction",
    response_class=FileResponse,
    responses={
        **problem_responses(404, 409),
        **binary_response("application/zip", "direction.safetensors, direction.json, probe.json."),
    },
)
def download_probe_direction(request: Request, probe_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Download a succeeded probe's files (the per-layer directions, for `ssah eval --direction`)."""
    job = require_succeeded(load_job(session, principal, probe_id, kind="probe"))
    result = queries.get_probe_result(session, job_id=job.id)
    path = tenant_file(
        request.app.state.settings.artifact_dir, principal.tenant_id, result.artifact_uri if result else None
    )
    if path is None:
        raise NotFound(f"the files of probe {probe_id} are not available")
    return FileResponse(path, media_type="application/zip", filename=f"probe-{probe_id}.zip")


@router.delete("/{probe_id}", status_code=204, responses=problem_responses(404, 409))
def delete_probe(request: Request, probe_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished probe with its results and artifacts (409 while it or a job using it is queued or running)."""
    return delete_job_response(request, session, principal, probe_id, kind="probe")

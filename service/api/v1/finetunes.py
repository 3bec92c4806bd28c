"""Fine-tunes: train a model, optionally freezing or budgeting an audit's safety units."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

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
from service.artifacts import tar_stream, tenant_path
from service.errors import NotFound
from service.schemas import examples
from service.schemas.common import NOT_MODIFIED, Page, binary_response, problem_responses
from service.schemas.examples import request_examples
from service.schemas.jobs import FINETUNE_DATASET_SETTINGS, FinetuneCreate, JobRead
from service.schemas.results import FinetuneResultRead

router = APIRouter(prefix="/finetunes", tags=["finetunes"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.FINETUNE),
)
def create_finetune(
    request: Request, body: FinetuneCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Queue a fine-tune; answers 202 with the job."""
    if (replay := idem.replay(body)) is not None:
        return replay
    require_model(session, principal, body.model_id, settings=request.app.state.settings)
    require_dataset(session, principal, body.dataset_id, loc="body.dataset_id")
    for name in FINETUNE_DATASET_SETTINGS:  # a setting that names an upload rather than a builtin
        value = getattr(body, name)
        if value and not value.startswith("builtin:"):
            require_dataset(session, principal, uuid.UUID(value), loc=f"body.{name}")
    if body.audit_id is not None:
        require_audit(session, principal, body.audit_id, loc="body.audit_id")
    return submit_job(
        request, session, principal, idem, kind="finetune", body=body, model_id=body.model_id, collection="finetunes"
    )


@router.get("", response_model=Page[JobRead])
def list_finetunes(
    request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, filters: JobFiltersDep
):
    """List the tenant's finetunes, newest first, filtered by status, model and creation time."""
    return job_page(request, session, principal, page, filters, kind="finetune")


@router.get("/{finetune_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_finetune(request: Request, finetune_id: uuid.UUID, principal: PrincipalDep):
    """Get one finetune job; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, finetune_id, kind="finetune")


@router.post("/{finetune_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_finetune(finetune_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel a finetune: at once when queued, by request when running."""
    return cancel_response(idem, session, principal, finetune_id, kind="finetune")


@router.get("/{finetune_id}/result", response_model=FinetuneResultRead, responses=problem_responses(404, 409))
def get_finetune_result(finetune_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get the loss curve and output model of a succeeded fine-tune."""
    job = require_succeeded(load_job(session, principal, finetune_id, kind="finetune"))
    result = queries.get_finetune_result(session, job_id=job.id)
    if result is None:
        raise NotFound(f"finetune {job.id} stored no result")
    return FinetuneResultRead.model_validate(result)


@router.get(
    "/{finetune_id}/model",
    response_class=StreamingResponse,
    responses={
        **problem_responses(404, 409),
        **binary_response(
            "application/x-tar",
            "The trained model directory (config, tokenizer, safetensors weights) as a tar stream.",
        ),
    },
)
def download_finetuned_model(request: Request, finetune_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Download the fine-tuned model: a tar of a directory that `transformers` (and `ssah audit`) load."""
    job = require_succeeded(load_job(session, principal, finetune_id, kind="finetune"))
    result = queries.get_finetune_result(session, job_id=job.id)
    directory = tenant_path(
        request.app.state.settings.artifact_dir, principal.tenant_id, result.output_model_uri if result else None
    )
    if directory is None or not directory.is_dir():
        raise NotFound(f"the model of finetune {finetune_id} is not available from this server's artifact store")
    return StreamingResponse(
        tar_stream(directory),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="finetune-{finetune_id}.tar"'},
    )


@router.delete("/{finetune_id}", status_code=204, responses=problem_responses(404, 409))
def delete_finetune(request: Request, finetune_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished fine-tune with its results and artifacts (409 while it or a job using it is queued or running)."""
    return delete_job_response(request, session, principal, finetune_id, kind="finetune")

"""Evaluations: safety and utility scores of a model, optionally with one unit class ablated."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from service import queries
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, make_page, poll_job
from service.api.v1.common import (
    JobFiltersDep,
    cancel_response,
    check_judge_source,
    check_model_source,
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
from service.errors import NotFound
from service.schemas import examples
from service.schemas.common import NOT_MODIFIED, Page, problem_responses
from service.schemas.examples import request_examples
from service.schemas.jobs import EvaluationCreate, JobRead, hub_dataset, source_upload
from service.schemas.results import EvaluationRecordRead, ScoreRead

router = APIRouter(prefix="/evaluations", tags=["evaluations"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.EVALUATION),
)
def create_evaluation(
    request: Request, body: EvaluationCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Queue an evaluation; answers 202 with the job."""
    if (replay := idem.replay(body)) is not None:
        return replay
    require_model(session, principal, body.model_id, settings=request.app.state.settings)
    if body.audit_id is not None:
        require_audit(session, principal, body.audit_id, loc="body.audit_id")
    require_dataset(session, principal, body.safety_dataset_id, loc="body.safety_dataset_id")
    require_dataset(session, principal, body.utility_dataset_id, loc="body.utility_dataset_id")
    require_dataset(session, principal, body.suffixes_dataset_id, loc="body.suffixes_dataset_id")
    if body.judge is not None:
        check_judge_source(request.app.state.settings, principal, body.judge.model_dump(mode="json"))
    for name in ("harmful_source", "harmless_source"):  # bench:NAME=DATASET_ID reads the caller's upload
        require_dataset(session, principal, source_upload(getattr(body, name)), loc=f"body.{name}")
        repo = hub_dataset(getattr(body, name))  # hf:org/name: the hub organisations the deployment allows
        if repo is not None:
            check_model_source(request.app.state.settings, principal, repo, loc=f"body.{name}")
    return submit_job(
        request,
        session,
        principal,
        idem,
        kind="evaluation",
        body=body,
        model_id=body.model_id,
        collection="evaluations",
    )


@router.get("", response_model=Page[JobRead])
def list_evaluations(
    request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, filters: JobFiltersDep
):
    """List the tenant's evaluations, newest first, filtered by status, model and creation time."""
    return job_page(request, session, principal, page, filters, kind="evaluation")


@router.get("/{evaluation_id}", response_model=JobRead, responses={**problem_responses(404), **NOT_MODIFIED})
async def get_evaluation(request: Request, evaluation_id: uuid.UUID, principal: PrincipalDep):
    """Get one evaluation job; honours If-None-Match with its ETag."""
    return await poll_job(request, principal, evaluation_id, kind="evaluation")


@router.post("/{evaluation_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_evaluation(evaluation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Cancel an evaluation: at once when queued, by request when running."""
    return cancel_response(idem, session, principal, evaluation_id, kind="evaluation")


@router.get("/{evaluation_id}/scores", response_model=list[ScoreRead], responses=problem_responses(404, 409))
def list_evaluation_scores(evaluation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """List the scores of a succeeded evaluation."""
    job = require_succeeded(load_job(session, principal, evaluation_id, kind="evaluation"))
    return [ScoreRead.model_validate(s) for s in queries.list_scores(session, job_id=job.id)]


RecordSet = Literal["harmful", "harmless"]
Condition = Literal["system", "no_system", "suffix"]


@router.get(
    "/{evaluation_id}/records",
    response_model=Page[EvaluationRecordRead],
    response_model_exclude_unset=True,  # each item is the record as stored: no keys it lacks (suffix_index, judge)
    responses=problem_responses(404, 409),
)
def list_evaluation_records(
    request: Request,
    evaluation_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    prompt_set: Annotated[RecordSet | None, Query(alias="set", description="harmful or harmless prompts.")] = None,
    condition: Annotated[Condition | None, Query()] = None,
    category: Annotated[str | None, Query(max_length=200, description="The benchmark's category, exactly.")] = None,
    verdict: Annotated[
        Literal["success", "short", "refusal"] | None, Query(description="The headline refusal list's verdict.")
    ] = None,
    judge: Annotated[
        Literal["unsafe", "safe", "unparsed"] | None,
        Query(description="The judge's verdict; records no judge labelled never match."),
    ] = None,
):
    """List a succeeded evaluation's records (one per prompt and condition), in order, filtered and paginated."""
    job = require_succeeded(load_job(session, principal, evaluation_id, kind="evaluation"))
    items, total = queries.list_evaluation_records(
        session,
        tenant_id=principal.tenant_id,
        job_id=job.id,
        limit=page.limit,
        offset=page.offset,
        prompt_set=prompt_set,
        condition=condition,
        category=category,
        verdict=verdict,
        judge=judge,
    )
    if total == 0 and not queries.has_evaluation_records(session, job_id=job.id):
        raise NotFound(
            f"the records of evaluation {evaluation_id} are not in the database (an evaluation stored before "
            f"records were, or one with no records file); its whole result, if kept, is at "
            f"/v1/evaluations/{evaluation_id}/result"
        )
    return make_page(request, [EvaluationRecordRead.model_validate(row.record) for row in items], total, page)


@router.get(
    "/{evaluation_id}/result",
    response_class=FileResponse,
    responses={
        **problem_responses(404, 409),
        200: {
            "content": {"application/json": {}},
            "description": "evaluation.json: metrics, protocol and every record (answers, verdicts).",
        },
    },
)
def download_evaluation_result(
    request: Request, evaluation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
):
    """Download a succeeded evaluation's full result: metrics plus every prompt's answer and verdict."""
    job = require_succeeded(load_job(session, principal, evaluation_id, kind="evaluation"))
    uris = [score.records_uri for score in queries.list_scores(session, job_id=job.id)]
    path = tenant_file(request.app.state.settings.artifact_dir, principal.tenant_id, uris[0] if uris else None)
    if path is None:
        raise NotFound(f"the result file of evaluation {evaluation_id} is not available")
    return FileResponse(path, media_type="application/json", filename=f"evaluation-{evaluation_id}.json")


@router.delete("/{evaluation_id}", status_code=204, responses=problem_responses(404, 409))
def delete_evaluation(request: Request, evaluation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a finished evaluation with its results and artifacts (409 while it or a job using it is queued or running)."""
    return delete_job_response(request, session, principal, evaluation_id, kind="evaluation")

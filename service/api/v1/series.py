"""Series: the timeline of a model family's checkpoints (class shares, ASR, role transfer) ordered by a label."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import audit_log
from service.api.deps import PrincipalDep, SessionDep
from service.jobs import create_job
from service.limits import check_job_request
from service.models import Job
from service.schemas import examples
from service.schemas.common import problem_responses
from service.schemas.examples import request_examples
from service.schemas.integrations import SeriesCreate, SeriesRead
from service.series import build_series

router = APIRouter(prefix="/series", tags=["series"], responses=problem_responses(401, 422, 429))


@router.post("", response_model=SeriesRead, openapi_extra=request_examples(examples.SERIES))
def create_series(request: Request, body: SeriesCreate, session: SessionDep, principal: PrincipalDep):
    """Build the timeline of succeeded audits and evaluations whose labels match, queueing missing comparisons."""

    def queue_comparison(before: Job, after: Job) -> Job:
        params = {"before_audit_id": str(before.id), "after_audit_id": str(after.id)}
        settings = request.app.state.settings
        check_job_request(session, settings, tenant_id=principal.tenant_id, kind="comparison", params=params)
        job = create_job(
            session,
            celery=request.app.state.celery,
            tenant_id=principal.tenant_id,
            kind="comparison",
            params=params,
            model_id=before.model_id,
        )
        audit_log.record(
            session,
            request,
            principal,
            action="job.submit",
            resource_type="comparison",
            resource_id=job.id,
            details={"kind": "comparison", "model_id": str(before.model_id) if before.model_id else None},
        )
        return job

    return build_series(
        session,
        tenant_id=principal.tenant_id,
        labels=body.labels,
        order_by=body.order_by,
        model_ids=body.model_ids,
        queue_comparison=queue_comparison if body.compare else None,
    )

"""Helpers shared by the job routers: filters, lookups that 404 across tenants, result guards."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service import audit_log, queries, retention
from service.api.deps import Idempotency, PageParams, accepted_job, make_page
from service.api.v1.integrations import engine_params, job_integrations
from service.auth import Principal
from service.errors import JobNotReady, NotFound, Unprocessable
from service.jobs import cancel_job, create_job
from service.limits import check_job_request
from service.model_policy import SourceRefused, check_for_tenant, check_judge
from service.models import Job, JobStatus, ModelSource
from service.schemas.integrations import LABEL_KEY
from service.schemas.jobs import JobRead, JobStatusName
from service.settings import Settings

LABEL_KEY_RE = re.compile(LABEL_KEY)


class ModelSourceRefused(Unprocessable):
    title, slug = "Model Source Refused", "model-source-refused"


class JobFilters(BaseModel):
    status: JobStatusName | None = None
    model_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    labels: dict[str, str | None] = {}


LABEL_HELP = "key:value (that value) or key (any value); repeat for several, all must hold."
LabelQuery = Annotated[list[str] | None, Query(max_length=32, description=LABEL_HELP)]


def label_filters(label: list[str] | None) -> dict[str, str | None]:
    """``?label=key:value`` (or ``key``: present with any value), repeated, as {key: value or None}; 422 if malformed."""
    wanted: dict[str, str | None] = {}
    for item in label or []:
        key, sep, value = item.partition(":")
        if not LABEL_KEY_RE.fullmatch(key) or len(key) > 63 or len(value) > 256:
            raise Unprocessable.field("query.label", f"{item!r} is not key:value or key (keys: letters, digits, _.-/)")
        wanted[key] = value if sep else None
    return wanted


def _job_filters(
    status: Annotated[JobStatusName | None, Query()] = None,
    model_id: Annotated[uuid.UUID | None, Query()] = None,
    created_after: Annotated[
        datetime | None, Query(description="ISO 8601 date or date-time; exclusive; without a zone it is UTC.")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="ISO 8601 date or date-time; exclusive; without a zone it is UTC.")
    ] = None,
    label: LabelQuery = None,
) -> JobFilters:
    return JobFilters(
        status=status,
        model_id=model_id,
        created_after=as_utc(created_after),
        created_before=as_utc(created_before),
        labels=label_filters(label),
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` with a zone: a naive (or date-only, parsed as midnight) one is read as UTC.

    The columns hold aware datetimes; comparing them with a naive one fails in the driver (a 500).
    """
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


JobFiltersDep = Annotated[JobFilters, Depends(_job_filters)]


def job_page(
    request: Request,
    session: Session,
    principal: Principal,
    page: PageParams,
    filters: JobFilters,
    *,
    kind: str | None,
) -> dict[str, object]:
    """One page of the caller's jobs of ``kind`` (all kinds when None) matching ``filters``."""
    items, total = queries.list_jobs(
        session,
        tenant_id=principal.tenant_id,
        kind=kind,
        limit=page.limit,
        offset=page.offset,
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
        raise JobNotReady(
            f"{job.kind} {job.id} is {job.status}; results exist once it has succeeded",
            extra={"job_status": job.status},
        )
    return job


def check_model_source(settings: Settings, principal: Principal, source: str, *, loc: str) -> None:
    """422 naming ``loc`` and the policy rule unless the deployment's model policy allows ``source``."""
    try:
        check_for_tenant(settings, principal.tenant_id, source)
    except SourceRefused as exc:
        raise ModelSourceRefused(
            str(exc), extra={"rule": exc.rule, "errors": [{"loc": loc, "msg": exc.reason, "type": "model_policy"}]}
        ) from None


def check_judge_source(settings: Settings, principal: Principal, judge: dict) -> None:
    """422 naming the judge field and the rule unless the deployment allows this judge (model policy, allow-lists)."""
    try:
        check_judge(settings, principal.tenant_id, judge)
    except SourceRefused as exc:
        loc = {"judge_endpoint_not_allowed": "base_url", "judge_key_env_not_allowed": "api_key_env"}.get(exc.rule)
        errors = [{"loc": f"body.judge.{loc or 'source'}", "msg": exc.reason, "type": "model_policy"}]
        raise ModelSourceRefused(str(exc), extra={"rule": exc.rule, "errors": errors}) from None


def require_model(
    session: Session, principal: Principal, model_id: uuid.UUID, *, settings: Settings, loc: str = "body.model_id"
) -> ModelSource:
    """The caller's model ``model_id``; 422 naming ``loc`` if absent or if the model policy now refuses it."""
    model = queries.get_model(session, tenant_id=principal.tenant_id, model_id=model_id)
    if model is None:
        raise Unprocessable.field(loc, f"no model {model_id}")
    check_model_source(settings, principal, model.source, loc=loc)
    return model


def require_dataset(session: Session, principal: Principal, dataset_id: uuid.UUID | None, *, loc: str) -> None:
    """422 naming ``loc`` unless ``dataset_id`` is None or one of the caller's datasets."""
    if (
        dataset_id is not None
        and queries.get_dataset(session, tenant_id=principal.tenant_id, dataset_id=dataset_id) is None
    ):
        raise Unprocessable.field(loc, f"no dataset {dataset_id}")


def require_audit(session: Session, principal: Principal, audit_id: uuid.UUID, *, loc: str) -> Job:
    """The caller's succeeded audit ``audit_id``: 422 naming ``loc`` if absent, 409 if not succeeded."""
    audit = queries.get_job(session, tenant_id=principal.tenant_id, job_id=audit_id, kind="audit")
    if audit is None:
        raise Unprocessable.field(loc, f"no audit {audit_id}")
    return require_succeeded(audit)


def submit_job(
    request: Request,
    session: Session,
    principal: Principal,
    idem: Idempotency,
    *,
    kind: str,
    body: BaseModel,
    model_id: uuid.UUID | None,
    collection: str,
) -> JSONResponse:
    """Check the deployment's limits, queue the job, log who asked, answer 202 with it."""
    settings = request.app.state.settings
    params = engine_params(body)
    check_job_request(session, settings, tenant_id=principal.tenant_id, kind=kind, params=params)
    labels, gate, callback_url = job_integrations(session, settings, principal, kind=kind, body=body)
    job = create_job(
        session,
        celery=request.app.state.celery,
        tenant_id=principal.tenant_id,
        kind=kind,
        params=params,
        model_id=model_id,
        labels=labels,
        gate=gate,
        callback_url=callback_url,
    )
    audit_log.record(
        session,
        request,
        principal,
        action="job.submit",
        resource_type=kind,
        resource_id=job.id,
        details={"kind": kind, "model_id": str(model_id) if model_id else None},
    )
    return accepted_job(idem, job, collection=collection)


def cancel_response(
    idem: Idempotency, session: Session, principal: Principal, job_id: uuid.UUID, *, kind: str | None
) -> JSONResponse:
    """Cancel the caller's job and answer 200 with it (replayed under an Idempotency-Key)."""
    if (replay := idem.replay({})) is not None:
        return replay
    job = cancel_job(session, job=load_job(session, principal, job_id, kind=kind))
    audit_log.record(
        session,
        idem.request,
        principal,
        action="job.cancel",
        resource_type=job.kind,
        resource_id=job.id,
        details={"kind": job.kind, "status": job.status},
    )
    return idem.respond(200, JobRead.model_validate(job))


def delete_job_response(
    request: Request, session: Session, principal: Principal, job_id: uuid.UUID, *, kind: str | None
) -> Response:
    """Delete the caller's finished job with its results and artifacts; 204 (409 while it or a user of it is active)."""
    job = load_job(session, principal, job_id, kind=kind)
    kind_, status = job.kind, job.status
    retention.delete_job(session, request.app.state.settings, job=job)
    audit_log.record(
        session,
        request,
        principal,
        action="job.delete",
        resource_type=kind_,
        resource_id=job_id,
        details={"kind": kind_, "status": status},
    )
    return Response(status_code=204)

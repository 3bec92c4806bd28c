"""Deleting models, datasets and jobs with their artifacts, and the per-tenant retention sweep.

A resource in use by a queued or running job is never deleted (409 naming the jobs): the worker
would find its model, dataset or audit gone halfway. Rows go in the caller's transaction; files go
only once it has committed (``after_commit``), so a rolled-back delete never loses an artifact.
"""

from __future__ import annotations

import logging
import typing
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import artifacts
from service.audit_log import record_system
from service.db import after_commit
from service.models import TERMINAL_STATUSES, Dataset, Job, JobStatus, ModelSource, Tenant, utcnow
from service.problems import Conflict
from service.settings import Settings

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
FINISHED = tuple(status.value for status in TERMINAL_STATUSES)


class ResourceInUse(Conflict):
    title, slug = "Resource In Use", "resource-in-use"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def jobs_using(session: Session, *, tenant_id: uuid.UUID, resource_id: uuid.UUID) -> list[Job]:
    """The tenant's queued or running jobs that use ``resource_id``: as their model, in their parameters
    (a dataset, an audit, ``upload:<id>``), or through a model whose source lies in that job's artifacts."""
    wanted = str(resource_id)
    rows = session.execute(
        sa.select(Job, ModelSource.source)
        .outerjoin(ModelSource, ModelSource.id == Job.model_id)
        .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
        .order_by(Job.created_at)
    )
    # Active jobs are few (bounded by the per-tenant job limit): reading their parameters here is cheap.
    return [
        job
        for job, source in rows
        if job.id != resource_id
        and (job.model_id == resource_id or wanted in (source or "") or any(wanted in s for s in _strings(job.params)))
    ]


def refuse_if_used(session: Session, *, tenant_id: uuid.UUID, resource_id: uuid.UUID, what: str) -> None:
    """409 naming the queued or running jobs that use ``resource_id`` (``what`` names it: "model", "dataset"...)."""
    users = jobs_using(session, tenant_id=tenant_id, resource_id=resource_id)
    if users:
        names = ", ".join(f"{job.kind} {job.id} ({job.status})" for job in users)
        raise ResourceInUse(
            f"{what} {resource_id} is used by {len(users)} queued or running job(s): {names}; "
            "cancel them or wait for them to end",
            extra={"jobs": [{"id": str(job.id), "kind": job.kind, "status": job.status} for job in users]},
        )


def delete_model(session: Session, *, model: ModelSource) -> None:
    """Delete a registered model; its jobs stay (``model_id`` becomes null). A source is a reference: no files."""
    refuse_if_used(session, tenant_id=model.tenant_id, resource_id=model.id, what="model")
    session.delete(model)
    session.flush()


def delete_dataset(session: Session, settings: Settings, *, dataset: Dataset) -> None:
    """Delete a dataset and, after commit, its file unless another dataset of the tenant holds the same bytes."""
    refuse_if_used(session, tenant_id=dataset.tenant_id, resource_id=dataset.id, what="dataset")
    tenant_id, path = dataset.tenant_id, dataset.path
    session.delete(dataset)
    session.flush()
    shared = session.scalar(sa.select(sa.func.count()).where(Dataset.tenant_id == tenant_id, Dataset.path == path))
    if not shared:  # uploads are content-addressed: identical uploads share one file
        after_commit(session, lambda: _quietly(artifacts.remove_dataset_file, settings, tenant_id, path))


def delete_job(session: Session, settings: Settings, *, job: Job) -> None:
    """Delete a finished job, its results (the database cascades) and, after commit, its artifacts.

    409 while it is queued or running (cancel it first) or while an active job uses it.
    """
    if job.status in ACTIVE:
        raise ResourceInUse(
            f"{job.kind} {job.id} is {job.status}; cancel it and delete it once it has ended",
            extra={"jobs": [{"id": str(job.id), "kind": job.kind, "status": job.status}]},
        )
    refuse_if_used(session, tenant_id=job.tenant_id, resource_id=job.id, what=job.kind)
    _delete_job_rows(session, settings, job)


def _delete_job_rows(session: Session, settings: Settings, job: Job) -> None:
    tenant_id, job_id = job.tenant_id, job.id
    session.execute(sa.delete(Job).where(Job.id == job_id).execution_options(synchronize_session=False))
    session.expunge(job)
    after_commit(session, lambda: _quietly(artifacts.remove_job_artifacts, settings, tenant_id, job_id))


def _quietly(remove, settings: Settings, tenant_id: uuid.UUID, what: object) -> None:
    try:
        remove(settings, tenant_id, what)
    except OSError as exc:  # the rows are gone already; a file left behind is only space
        log.warning("could not remove artifacts of %s (tenant %s): %s", what, tenant_id, exc)


def apply_retention(session: Session, settings: Settings, *, now: datetime | None = None, limit: int = 200) -> int:
    """Delete finished jobs older than their tenant's ``retention_days`` (by ``finished_at``); return how many.

    The caller commits (through ``service.db.commit`` or ``session_scope``, which then removes the
    files). Jobs an active job uses wait for a later round; rows are taken with SKIP LOCKED, so
    reconcilers of several workers share the work.
    """
    now = now or utcnow()
    deleted = 0
    tenants = session.execute(sa.select(Tenant.id, Tenant.retention_days).where(Tenant.retention_days.is_not(None)))
    for tenant_id, days in tenants.all():
        expired = session.scalars(
            sa.select(Job)
            .where(
                Job.tenant_id == tenant_id,
                Job.status.in_(FINISHED),
                Job.finished_at < now - timedelta(days=typing.cast(int, days)),
            )
            .order_by(Job.finished_at)
            .limit(limit - deleted)
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            if jobs_using(session, tenant_id=tenant_id, resource_id=job.id):
                continue
            record_system(
                session,
                tenant_id=tenant_id,
                action="job.expire",
                resource_type=job.kind,
                resource_id=job.id,
                details={"kind": job.kind, "status": job.status, "retention_days": days},
            )
            _delete_job_rows(session, settings, job)
            deleted += 1
        if deleted >= limit:
            break
    session.flush()
    return deleted

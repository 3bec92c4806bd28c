"""Read queries. Every function takes keyword-only arguments, is scoped to a tenant and never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import (
    Comparison,
    Dataset,
    EvaluationRecord,
    FinetuneResult,
    IdempotencyKey,
    Job,
    JobStatus,
    ModelSource,
    ProbeResult,
    Score,
    UnitMap,
)

T = TypeVar("T")


def paginate(session: Session, stmt: sa.Select[T], *, limit: int, offset: int) -> tuple[Sequence[T], int]:
    """Return one page of ``stmt`` (already ordered) and the total count of its rows."""
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = session.scalars(stmt.limit(limit).offset(offset)).all()
    return items, total


def _one_job(stmt: sa.Select[Any], *, tenant_id: uuid.UUID, job_id: uuid.UUID, kind: str | None) -> sa.Select[Any]:
    stmt = stmt.where(Job.id == job_id, Job.tenant_id == tenant_id)
    return stmt if kind is None else stmt.where(Job.kind == kind)


def get_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID, kind: str | None = None) -> Job | None:
    """Return the tenant's job ``job_id`` (of ``kind`` when given), or None."""
    return session.scalars(_one_job(sa.select(Job), tenant_id=tenant_id, job_id=job_id, kind=kind)).one_or_none()


_JOB_COLUMNS = tuple(Job.__table__.columns)


def get_job_row(
    reader: sa.Connection | Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID, kind: str | None = None
) -> sa.Row[Any] | None:
    """``get_job`` as a Core row (no identity map, no instance state): the polling hot path's read."""
    stmt = _one_job(sa.select(*_JOB_COLUMNS), tenant_id=tenant_id, job_id=job_id, kind=kind)
    return reader.execute(stmt).first()


def list_jobs(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    kind: str | None = None,
    status: str | None = None,
    model_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    labels: dict[str, str | None] | None = None,
) -> tuple[Sequence[Job], int]:
    """Return one page of the tenant's jobs, newest first, and how many match the filters."""
    stmt = with_labels(sa.select(Job).where(Job.tenant_id == tenant_id), Job, labels)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if model_id is not None:
        stmt = stmt.where(Job.model_id == model_id)
    if created_after is not None:
        stmt = stmt.where(Job.created_at > created_after)
    if created_before is not None:
        stmt = stmt.where(Job.created_at < created_before)
    return paginate(session, stmt.order_by(Job.created_at.desc(), Job.id.desc()), limit=limit, offset=offset)


def with_labels(stmt: sa.Select[Any], model: Any, labels: dict[str, str | None] | None) -> sa.Select[Any]:
    """``stmt`` keeping rows whose ``labels`` hold each key (with that value, unless None)."""
    for key, value in (labels or {}).items():
        text = model.labels[key].as_string()
        stmt = stmt.where(text.is_not(None) if value is None else text == value)
    return stmt


def pending_jobs(session: Session, *, limit: int, created_before: datetime | None = None) -> Sequence[Job]:
    """Return committed queued jobs the broker never accepted, oldest first, locked for this transaction."""
    stmt = (
        sa.select(Job)
        .where(Job.status == JobStatus.queued.value, Job.enqueued_at.is_(None), Job.cancel_requested.is_(False))
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if created_before is not None:
        stmt = stmt.where(Job.created_at < created_before)
    return session.scalars(stmt).all()


def running_job_ids(session: Session) -> set[uuid.UUID]:
    return set(session.scalars(sa.select(Job.id).where(Job.status == JobStatus.running.value)))


def next_runnable_job(session: Session, *, stale_before: datetime, orphans: set[uuid.UUID]) -> sa.Row | None:
    """(id, kind) of the oldest job to run in-process: queued, or running without a heartbeat or left by a dead
    process (``orphans``)."""
    return session.execute(
        sa.select(Job.id, Job.kind)
        .where(
            sa.or_(
                Job.status == JobStatus.queued.value,
                sa.and_(
                    Job.status == JobStatus.running.value,
                    sa.or_(Job.updated_at < stale_before, Job.id.in_(orphans or [None])),
                ),
            )
        )
        .order_by(Job.created_at)
        .limit(1)
    ).first()


def queued_jobs_sent_before(session: Session, *, sent_before: datetime) -> Sequence[Job]:
    """Queued, not cancelled jobs whose message went to the broker before ``sent_before``; locked, skipping rows
    another reconciler holds."""
    return session.scalars(
        sa.select(Job)
        .where(
            Job.status == JobStatus.queued.value,
            Job.cancel_requested.is_(False),
            Job.enqueued_at < sent_before,
        )
        .order_by(Job.created_at)
        .with_for_update(skip_locked=True)
    ).all()


def running_jobs_silent_since(session: Session, *, silent_since: datetime) -> Sequence[sa.Row]:
    """(id, kind) of running jobs whose heartbeat stopped before ``silent_since``."""
    return session.execute(
        sa.select(Job.id, Job.kind).where(Job.status == JobStatus.running.value, Job.updated_at < silent_since)
    ).all()


def get_model(session: Session, *, tenant_id: uuid.UUID, model_id: uuid.UUID) -> ModelSource | None:
    """Return the tenant's registered model ``model_id``, or None."""
    stmt = sa.select(ModelSource).where(ModelSource.id == model_id, ModelSource.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def list_models(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    labels: dict[str, str | None] | None = None,
) -> tuple[Sequence[ModelSource], int]:
    """Return one page of the tenant's models, newest first."""
    stmt = _created_between(
        sa.select(ModelSource).where(ModelSource.tenant_id == tenant_id), ModelSource, created_after, created_before
    )
    stmt = with_labels(stmt, ModelSource, labels)
    return paginate(
        session, stmt.order_by(ModelSource.created_at.desc(), ModelSource.id.desc()), limit=limit, offset=offset
    )


def get_dataset(session: Session, *, tenant_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset | None:
    """Return the tenant's dataset ``dataset_id``, or None."""
    stmt = sa.select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def list_datasets(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> tuple[Sequence[Dataset], int]:
    """Return one page of the tenant's datasets, newest first."""
    stmt = _created_between(
        sa.select(Dataset).where(Dataset.tenant_id == tenant_id), Dataset, created_after, created_before
    )
    return paginate(session, stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()), limit=limit, offset=offset)


def _created_between(
    stmt: sa.Select[Any], model: Any, after: datetime | None, before: datetime | None
) -> sa.Select[Any]:
    if after is not None:
        stmt = stmt.where(model.created_at > after)
    if before is not None:
        stmt = stmt.where(model.created_at < before)
    return stmt


def get_unit_map(session: Session, *, job_id: uuid.UUID) -> UnitMap | None:
    """Return the unit map of audit job ``job_id`` (tenant already checked on the job), or None."""
    return session.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).one_or_none()


def list_scores(session: Session, *, job_id: uuid.UUID) -> Sequence[Score]:
    """Return the scores of evaluation job ``job_id``."""
    return session.scalars(sa.select(Score).where(Score.job_id == job_id).order_by(Score.created_at)).all()


def list_evaluation_records(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    limit: int,
    offset: int,
    prompt_set: str | None = None,
    condition: str | None = None,
    category: str | None = None,
    verdict: str | None = None,
    judge: str | None = None,
) -> tuple[Sequence[EvaluationRecord], int]:
    """Return one page of the tenant's evaluation ``job_id``'s records, in the engine's order, and the match count."""
    stmt = (
        sa.select(EvaluationRecord)
        .join(Job, Job.id == EvaluationRecord.job_id)
        .where(EvaluationRecord.job_id == job_id, Job.tenant_id == tenant_id)
    )
    for column, value in (
        (EvaluationRecord.prompt_set, prompt_set),
        (EvaluationRecord.condition, condition),
        (EvaluationRecord.category, category),
        (EvaluationRecord.verdict, verdict),
        (EvaluationRecord.judge_verdict, judge),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return paginate(session, stmt.order_by(EvaluationRecord.position), limit=limit, offset=offset)


def has_evaluation_records(session: Session, *, job_id: uuid.UUID) -> bool:
    """Whether evaluation ``job_id`` stored any record rows (evaluations older than the table stored none)."""
    return session.scalar(sa.select(sa.exists().where(EvaluationRecord.job_id == job_id))) or False


def get_finetune_result(session: Session, *, job_id: uuid.UUID) -> FinetuneResult | None:
    """Return the result of fine-tune job ``job_id``, or None."""
    return session.scalars(sa.select(FinetuneResult).where(FinetuneResult.job_id == job_id)).one_or_none()


def get_comparison(session: Session, *, job_id: uuid.UUID) -> Comparison | None:
    """Return the cross-tab of comparison job ``job_id``, or None."""
    return session.scalars(sa.select(Comparison).where(Comparison.job_id == job_id)).one_or_none()


def get_probe_result(session: Session, *, job_id: uuid.UUID) -> ProbeResult | None:
    """Return the result of probe job ``job_id``, or None."""
    return session.scalars(sa.select(ProbeResult).where(ProbeResult.job_id == job_id)).one_or_none()


def get_idempotency_key(session: Session, *, tenant_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    """Return the stored answer for the tenant's ``Idempotency-Key`` ``key``, or None."""
    stmt = sa.select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
    return session.scalars(stmt).one_or_none()

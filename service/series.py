"""Checkpoint series: one model family's audits and evaluations ordered by a label, and role transfer between them.

The service never loads unit maps (they are tensors), so the role transfer between consecutive audits is
a comparison job (``ssah.comparison`` on the cpu queue): ``build_series`` finds the comparison of each
consecutive pair, queues the missing ones when asked, and reports their cross-tabs once they succeeded.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Comparison, Job, JobStatus, ModelSource, Score, UnitMap
from service.problems import Unprocessable

MAX_JOBS = 5000  # candidate jobs one series reads; past it the selector must be narrower


def effective_labels(job: Job, model_labels: dict[str, str] | None) -> dict[str, str]:
    """A job's labels over its model's: an audit of a labelled checkpoint needs no labels of its own."""
    return {**(model_labels or {}), **(job.labels or {})}


def order_key(values: Sequence[str]) -> Callable[[str], Any]:
    """Numeric order when every value is a finite number, else text order."""
    try:
        if all(math.isfinite(float(v)) for v in values):
            return float
    except ValueError:
        pass
    return str


def _candidates(
    session: Session, *, tenant_id: uuid.UUID, model_ids: list[uuid.UUID] | None
) -> list[tuple[Job, dict[str, str] | None]]:
    stmt = (
        sa.select(Job, ModelSource.labels)
        .outerjoin(ModelSource, ModelSource.id == Job.model_id)
        .where(
            Job.tenant_id == tenant_id,
            Job.kind.in_(["audit", "evaluation"]),
            Job.status == JobStatus.succeeded.value,
        )
        .order_by(Job.created_at, Job.id)
        .limit(MAX_JOBS + 1)
    )
    if model_ids is not None:
        stmt = stmt.where(Job.model_id.in_(model_ids))
    rows = [(job, labels) for job, labels in session.execute(stmt)]
    if len(rows) > MAX_JOBS:
        raise Unprocessable(f"more than {MAX_JOBS} succeeded audits and evaluations to look at: give model_ids")
    return rows


def _comparison(session: Session, *, tenant_id: uuid.UUID, before: uuid.UUID, after: uuid.UUID) -> Job | None:
    """The newest comparison of ``before`` then ``after`` that has not failed or been cancelled."""
    return session.scalars(
        sa.select(Job)
        .where(
            Job.tenant_id == tenant_id,
            Job.kind == "comparison",
            Job.status.in_([JobStatus.queued.value, JobStatus.running.value, JobStatus.succeeded.value]),
            Job.params["before_audit_id"].as_string() == str(before),
            Job.params["after_audit_id"].as_string() == str(after),
        )
        .order_by(Job.created_at.desc())
        .limit(1)
    ).first()


def build_series(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    labels: dict[str, str],
    order_by: str,
    model_ids: list[uuid.UUID] | None,
    queue_comparison: Callable[[Job, Job], Job] | None,
) -> dict[str, Any]:
    """The timeline: a point per value of ``order_by`` (newest audit, newest plain evaluation) and transitions."""
    audits: dict[str, Job] = {}
    evaluations: dict[str, Job] = {}
    for job, model_labels in _candidates(session, tenant_id=tenant_id, model_ids=model_ids):
        effective = effective_labels(job, model_labels)
        if order_by not in effective or any(effective.get(k) != v for k, v in labels.items()):
            continue
        if job.kind == "audit":
            audits[effective[order_by]] = job  # oldest first: the newest at a value wins
        elif not job.params.get("ablate"):  # the plain score of the checkpoint, not an ablation study
            evaluations[effective[order_by]] = job
    values = sorted(set(audits) | set(evaluations), key=order_key(list(set(audits) | set(evaluations))))
    points = []
    for value in values:
        audit, evaluation = audits.get(value), evaluations.get(value)
        either = audit or evaluations[value]  # every value has one or the other
        summary = session.scalar(sa.select(UnitMap.summary).where(UnitMap.job_id == audit.id)) if audit else None
        metrics = session.scalar(sa.select(Score.metrics).where(Score.job_id == evaluation.id)) if evaluation else None
        safety = (metrics or {}).get("safety") or {}
        points.append(
            {
                "value": value,
                "model_id": either.model_id,
                "audit_id": audit.id if audit else None,
                "evaluation_id": evaluation.id if evaluation else None,
                "classes": (summary or {}).get("classes"),
                "safety": {"asr": safety.get("asr"), "over_refusal": safety.get("over_refusal")} if metrics else None,
            }
        )
    transitions = []
    with_audits = [value for value in values if value in audits]
    for before, after in zip(with_audits, with_audits[1:]):
        first, second = audits[before], audits[after]
        comparison = _comparison(session, tenant_id=tenant_id, before=first.id, after=second.id)
        if comparison is None and queue_comparison is not None:
            comparison = queue_comparison(first, second)
        crosstab = None
        if comparison is not None and comparison.status == JobStatus.succeeded.value:
            crosstab = session.scalar(sa.select(Comparison.crosstab).where(Comparison.job_id == comparison.id))
        transitions.append(
            {
                "before": before,
                "after": after,
                "before_audit_id": first.id,
                "after_audit_id": second.id,
                "comparison_id": comparison.id if comparison else None,
                "status": comparison.status if comparison else "none",
                "crosstab": crosstab,
            }
        )
    return {"order_by": order_by, "labels": labels, "points": points, "transitions": transitions}

"""Job lifecycle on the API side: create, enqueue after commit (with an outbox), cancel."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from service import queries, webhooks
from service.db import after_commit
from service.models import Job, JobStatus, utcnow
from service.problems import Conflict
from service.queue import get_celery, send_job
from service.redact import redact

log = logging.getLogger(__name__)


def create_job(
    session: Session,
    *,
    celery: Celery,
    tenant_id: uuid.UUID,
    kind: str,
    params: dict[str, Any],
    model_id: uuid.UUID | None,
    labels: dict[str, str] | None = None,
    gate: dict[str, Any] | None = None,
    callback_url: str | None = None,
) -> Job:
    """Add a queued job; it is sent to the broker only once the session has committed."""
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        kind=kind,
        status=JobStatus.queued.value,
        params=params,
        model_id=model_id,
        labels=labels or {},
        gate=gate,
        callback_url=callback_url,
    )
    session.add(job)
    session.flush()
    after_commit(session, lambda: _enqueue_committed(session, celery=celery, job=job))
    return job


def _enqueue_committed(session: Session, *, celery: Celery, job: Job) -> None:
    try:
        send_job(celery, job_id=job.id, kind=job.kind, session=session)
    except Exception as exc:  # the broker is down: enqueue_pending() picks the job up later
        log.warning("job %s committed but not enqueued (%s); left for enqueue_pending", job.id, redact(exc))
        return
    job.enqueued_at = utcnow()
    try:
        session.commit()
    except Exception:  # a worker may have touched the row already; the message is out either way
        session.rollback()
        log.warning("job %s enqueued but enqueued_at not recorded", job.id, exc_info=True)


def enqueue_pending(
    session: Session, *, celery: Celery | None = None, limit: int = 100, min_age: timedelta = timedelta(0)
) -> int:
    """Send committed queued jobs the broker never accepted; return how many were sent.

    The caller commits. ``min_age`` leaves alone jobs younger than that, which a request may still
    be enqueueing itself. Stops at the first broker failure (the rest would fail the same way).
    """
    celery = celery or get_celery()
    sent = 0
    for job in queries.pending_jobs(session, limit=limit, created_before=utcnow() - min_age):
        try:
            send_job(celery, job_id=job.id, kind=job.kind, session=session)
        except Exception as exc:
            log.warning("broker still unreachable (%s); %d job(s) sent this round", redact(exc), sent)
            break
        job.enqueued_at = utcnow()
        sent += 1
    session.flush()
    return sent


def cancel_job(session: Session, *, job: Job) -> Job:
    """Cancel ``job``: at once when queued, by request when running; 409 when already finished.

    One conditional UPDATE decides, not a read then an ORM write: concurrent cancels, and the
    worker's progress writes, change the row (and its version) between the two, and the ORM's
    version check then fails (StaleDataError, a 500). The database serialises the UPDATEs; each
    sees the row as the previous one left it, so a cancel either applies (200) or finds the job
    already finished (409).
    """
    queued = Job.status == JobStatus.queued.value
    now = utcnow()
    changed = session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .values(
            # Running: the worker sees the flag between steps and stops; status stays running until then.
            cancel_requested=True,
            status=sa.case((queued, JobStatus.cancelled.value), else_=Job.status),
            finished_at=sa.case((queued, now), else_=Job.finished_at),
            updated_at=now,
            version=Job.version + 1,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(job)
    if changed is None:
        raise Conflict(f"job {job.id} is already {job.status} and cannot be cancelled")
    webhooks.enqueue_delivery(session, job)  # a queued job ends here; a running one ends in its worker
    return job

"""A job's life inside a worker: claim it, report progress (and a heartbeat), finish it exactly once.

Every write after the claim is fenced by the attempt number: when a job is taken over (its worker
died and the message came back), the old attempt's late writes match no row and it stops
(``Superseded``). ``updated_at`` doubles as the heartbeat: progress writes refresh it, and a
thread refreshes it when the engine is silent longer than ``heartbeat_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service import gates, webhooks
from service.models import TERMINAL_STATUSES, Job, JobStatus, ModelSource, utcnow

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job's cancel was requested; raised from the progress callback to stop the engine."""


class Superseded(Exception):
    """Another attempt owns the job now (or it was finished meanwhile); this one must stop quietly."""


@dataclass(frozen=True)
class Claim:
    """What a worker needs of its job, read once when it marked the job running."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    params: dict[str, Any]
    model_source: str | None
    attempt: int


def claim_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    *,
    kind: str,
    stale_seconds: float,
    takeover: bool = False,
    max_attempts: int = 0,
) -> Claim | None:
    """Mark the job running and return it; None when there is nothing to do.

    Nothing to do: unknown job, already finished (a redelivered message), or running under a live
    worker (its heartbeat is fresh) unless ``takeover``. A running job whose heartbeat is stale
    lost its worker: it is run again from the start, counted in ``attempts``, unless it has
    already been started ``max_attempts`` times (0: no cap). Then it is a poison job (it kills
    every worker that runs it: out of memory, a crash in native code) and fails, saying so.
    """
    with factory.begin() as session:
        # FOR NO KEY UPDATE: the key never changes, so rows that merely reference the job (their
        # foreign-key check takes FOR KEY SHARE) do not hold up a claim, as FOR UPDATE would.
        job = session.scalars(sa.select(Job).where(Job.id == job_id).with_for_update(key_share=True)).one_or_none()
        if job is None:
            log.error("job %s does not exist; message dropped", job_id)
            return None
        if job.kind != kind:
            log.error("job %s is a %s, not a %s; message dropped", job_id, job.kind, kind)
            return None
        if JobStatus(job.status) in TERMINAL_STATUSES:
            log.info("job %s is already %s; nothing to do", job_id, job.status)
            return None
        if job.status == JobStatus.running.value and not takeover:
            silent = utcnow() - job.updated_at
            if silent < timedelta(seconds=stale_seconds):
                log.info(
                    "job %s is running under a live worker (heard %.0fs ago); left alone",
                    job_id,
                    silent.total_seconds(),
                )
                return None
            log.warning("job %s: its worker went silent %.0fs ago; running it again", job_id, silent.total_seconds())
        if job.status == JobStatus.running.value and 0 < max_attempts <= job.attempts:
            log.error("job %s: its worker died %d times; failing it", job_id, job.attempts)
            _end(job, JobStatus.failed, error=poison_message(job, max_attempts), message="failed: its worker died")
            webhooks.enqueue_delivery(session, job)
            return None
        if job.cancel_requested:
            _end(job, JobStatus.cancelled, message="cancelled")
            webhooks.enqueue_delivery(session, job)
            return None
        source = session.get(ModelSource, job.model_id).source if job.model_id else None
        job.status = JobStatus.running.value
        job.attempts += 1
        job.started_at = utcnow()
        job.finished_at = None
        job.error = None
        job.progress = 0.0
        job.progress_message = "starting" if job.attempts == 1 else f"starting (attempt {job.attempts})"
        return Claim(job.id, job.tenant_id, job.kind, dict(job.params), source, job.attempts)


def poison_message(job: Job, max_attempts: int) -> str:
    """What a job that killed its worker every time says: how often, and the last phase it reported."""
    phase = (job.progress_message or "starting").removesuffix(f" (attempt {job.attempts})")
    return (
        f"the worker running this job died {job.attempts} times (killed, out of memory, or past the hard time "
        f"limit) and it is not started again (max_job_attempts={max_attempts}); last known phase: "
        f"{phase!r} at {job.progress:.0%}"
    )


def finish_job(
    factory: sessionmaker[Session],
    claim: Claim,
    status: JobStatus,
    *,
    error: str | None = None,
    store: Callable[[Session], None] | None = None,
    message: str | None = None,
) -> None:
    """End the job in ``status``; ``store(session)`` writes its results in the same transaction.

    The same transaction computes a succeeded job's gate from those results and adds its webhook
    delivery, so neither can be lost or seen before the job has ended.
    """
    with factory.begin() as session:
        job = _owned(session, claim)
        if store is not None:
            store(session)
            session.flush()
        if status == JobStatus.succeeded and job.gate:
            job.gate = gates.evaluate(session, job)
        _end(job, status, error=error, message=message or status.value)
        webhooks.enqueue_delivery(session, job)


def _owned(session: Session, claim: Claim) -> Job:
    job = session.scalars(
        sa.select(Job)
        .where(
            Job.id == claim.job_id,
            Job.attempts == claim.attempt,
            Job.status == JobStatus.running.value,
        )
        .with_for_update(key_share=True)
    ).one_or_none()
    if job is None:
        raise Superseded(f"job {claim.job_id} attempt {claim.attempt} no longer owns the job")
    return job


def _end(job: Job, status: JobStatus, *, error: str | None = None, message: str | None = None) -> None:
    job.status = status.value
    job.finished_at = utcnow()
    job.error = error
    if status == JobStatus.succeeded:
        job.progress = 1.0
    job.progress_message = (message or status.value)[:500]


class Progress:
    """The engine's ``(stage, fraction)`` callback: throttled progress writes, heartbeat, cancellation."""

    def __init__(self, factory: sessionmaker[Session], claim: Claim, *, interval: float, heartbeat: float):
        self.factory, self.claim = factory, claim
        self.interval, self.heartbeat = interval, heartbeat
        self.stage, self.fraction = "starting", 0.0
        self.last_write = time.monotonic()
        self.cancelled = self.superseded = False
        self._lock = threading.Lock()

    def __call__(self, stage: str, fraction: float) -> None:
        self.raise_if_stopped()
        self.stage, self.fraction = stage, min(max(float(fraction), 0.0), 1.0)
        if time.monotonic() - self.last_write >= self.interval:
            self.write()
            self.raise_if_stopped()

    def raise_if_stopped(self) -> None:
        if self.superseded:
            raise Superseded(f"job {self.claim.job_id} attempt {self.claim.attempt} was taken over")
        if self.cancelled:
            raise Cancelled(f"job {self.claim.job_id} was cancelled")

    def write(self) -> None:
        """Store the stage and fraction (bumping the version); learn about cancel and takeover."""
        with self._lock:
            self.last_write = time.monotonic()
            # Below 1.0 while running: only the final transaction says the job is done.
            values = {
                "progress": min(self.fraction, 0.99),
                "progress_message": self.stage[:500],
                "updated_at": utcnow(),
                "version": Job.version + 1,
            }
            try:
                with self.factory.begin() as session:
                    row = session.execute(
                        sa.update(Job)
                        .where(
                            Job.id == self.claim.job_id,
                            Job.attempts == self.claim.attempt,
                            Job.status == JobStatus.running.value,
                        )
                        .values(**values)
                        .returning(Job.cancel_requested)
                        .execution_options(synchronize_session=False)
                    ).first()
            except OperationalError as exc:  # a database blip must not kill a long job; the next write retries
                log.warning("job %s: progress not stored (%s)", self.claim.job_id, exc.orig)
                return
        if row is None:
            self.superseded = True
        elif row.cancel_requested:
            self.cancelled = True

    def beat(self) -> None:
        """Refresh the heartbeat when the engine has been silent for ``heartbeat`` seconds."""
        if time.monotonic() - self.last_write >= self.heartbeat:
            self.write()


@contextmanager
def heartbeat(progress: Progress) -> Iterator[None]:
    """Run ``progress.beat`` in a daemon thread for the duration of the block."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(max(progress.heartbeat / 3, 0.05)):
            try:
                progress.beat()
            except Exception:  # never let the heartbeat thread die silently mid-job
                log.exception("job %s: heartbeat failed", progress.claim.job_id)

    thread = threading.Thread(target=loop, name=f"heartbeat-{progress.claim.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)

"""The Celery app of the workers: ``celery -A worker.app worker -Q gpu`` (or ``ssah worker``).

Late acks + prefetch 1: a message is acknowledged only once its job has ended, so a worker killed
mid-job leaves the message to be delivered again (after ``visibility_timeout`` on Redis; the
reconciler requeues the job sooner, once its heartbeat is ``stale_seconds`` old). When only a
prefork child died, the main process retries the task at once and the retry takes the job over.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from service import logs, redact
from service.db import forget_inherited_connections, get_sessionmaker
from service.queue import TASKS, make_celery
from service.settings import get_settings
from service.webhooks import start_deliverer
from worker import jobs
from worker.reconciler import start_reconciler
from worker.runner import TRANSIENT, run_job
from worker.store import ArtifactStore, make_store

log = logging.getLogger(__name__)

redact.install()  # Celery, kombu and our own lines: no broker or database password in the worker's log
settings = get_settings()
app = make_celery(settings)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=settings.task_soft_time_limit,
    task_time_limit=settings.task_time_limit,
    # Longer than the longest job, or Redis hands a running job's message to a second worker.
    broker_transport_options={**app.conf.broker_transport_options, "visibility_timeout": settings.visibility_timeout},
    # A worker outlives broker outages: it waits for Redis to come back, however long that takes.
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
)
if settings.log_format == "json":

    @setup_logging.connect
    def _json_logs(loglevel: str | int | None = None, **_: object) -> None:
        # Connected, this replaces Celery's own log setup: its lines and ours share the JSON handler.
        logs.configure("json", loglevel or settings.log_level)


# retry_on_worker_lost: when a pool child dies mid-job (kill -9, OOM, hard time limit) the main process
# sends the task again at once as a retry, whose claim takes the job over; a plain redelivery would
# find the job "running" with a fresh heartbeat and leave it to the stale period. Its countdown is
# default_retry_delay (transient retries compute their own backoff).
RETRY = dict(
    bind=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=10,
    retry_on_worker_lost=True,
    default_retry_delay=0,
)


@lru_cache
def _store() -> ArtifactStore:
    return make_store(settings)


def _run(task, job_id: str, kind: str, body) -> str:
    # A retry comes after this worker's own attempt failed on the database or broker: take the job back.
    return run_job(
        job_id,
        kind,
        body,
        settings=settings,
        factory=get_sessionmaker(),
        store=_store(),
        takeover=task.request.retries > 0,
    )


@app.task(name=TASKS["audit"][0], **RETRY)
def audit(self, job_id: str) -> str:
    """Run audit job ``job_id``."""
    return _run(self, job_id, "audit", jobs.audit)


@app.task(name=TASKS["evaluation"][0], **RETRY)
def evaluation(self, job_id: str) -> str:
    """Run evaluation job ``job_id``."""
    return _run(self, job_id, "evaluation", jobs.evaluation)


@app.task(name=TASKS["finetune"][0], **RETRY)
def finetune(self, job_id: str) -> str:
    """Run fine-tune job ``job_id``."""
    return _run(self, job_id, "finetune", jobs.finetune)


@app.task(name=TASKS["comparison"][0], **RETRY)
def comparison(self, job_id: str) -> str:
    """Run comparison job ``job_id``."""
    return _run(self, job_id, "comparison", jobs.comparison)


@app.task(name=TASKS["probe"][0], **RETRY)
def probe(self, job_id: str) -> str:
    """Run probe job ``job_id``."""
    return _run(self, job_id, "probe", jobs.probe)


_reconciler = None


@worker_process_init.connect
def _own_connections(**_: object) -> None:
    # Also done by service.db's at-fork hook; said here too because a pool child must never
    # share the parent's PostgreSQL sessions (its reconciler thread uses them meanwhile).
    forget_inherited_connections()


_deliverer = None


@worker_ready.connect
def _start_reconciler(**_: object) -> None:
    global _reconciler, _deliverer
    if settings.reconcile_interval_seconds > 0:
        _reconciler = start_reconciler(get_sessionmaker(), app, settings)
        log.info("reconciler every %.0fs", settings.reconcile_interval_seconds)
    if settings.webhook_poll_seconds > 0:
        _deliverer = start_deliverer(get_sessionmaker(), settings)


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    for stop in (_reconciler, _deliverer):
        if stop is not None:
            stop.set()

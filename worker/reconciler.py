"""Nothing lost: send what the broker never got, re-send what it lost, requeue jobs whose worker died.

Runs as a thread in every Celery worker process (``start_reconciler``), every
``reconcile_interval_seconds``. Several reconcilers at once are harmless: pending rows are locked
with SKIP LOCKED and the tasks are idempotent, so a duplicate message finds its job done or running
and does nothing.

Redis here keeps nothing on disk: a restart drops queued and unacknowledged messages. So for a
Redis broker the reconciler looks at what the broker still holds (queue lists and the ``unacked``
hash) and re-sends

- queued jobs, sent more than ``requeue_after_seconds`` ago, that the broker no longer holds;
- running jobs whose heartbeat (``updated_at``) is older than ``stale_seconds`` and that wait in no
  queue. Their worker is dead: a live one beats every ``heartbeat_seconds``. With late acks its
  message would come back by itself, but only after ``visibility_timeout`` (hours, so that long
  jobs are not redelivered while they run); re-sending now gets the job going again within
  minutes. The dead worker's message, when Redis finally redelivers it, finds the job running
  under a live attempt or finished, and does nothing; attempts are fenced, so even a wrongly
  presumed-dead worker cannot overwrite its successor.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service import queries
from service.db import session_scope
from service.gpu_routing import gpu_classes
from service.jobs import enqueue_pending
from service.models import utcnow
from service.queue import TASKS, send_job
from service.redact import redact
from service.retention import apply_retention
from service.settings import Settings
from service.webhooks import create_missing_deliveries

log = logging.getLogger(__name__)

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: queue "gpu" at priority 3 is the list "gpu\x06\x163"
# A freshly created job may still be on its way to the broker from the API request itself.
PENDING_GRACE = timedelta(seconds=5)


def broker_messages(broker_url: str, gpu_class_names: Sequence[str] = ()) -> tuple[set[str], set[str]] | None:
    """Job ids the Redis broker holds: (waiting in a queue, delivered but unacked); None if not Redis.

    ``gpu_class_names`` (``SSAH_GPU_CLASSES``) adds the queues of the GPU memory classes."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
    queues = {queue for _, queue in TASKS.values()} | {gpu.queue for gpu in gpu_classes(list(gpu_class_names))}
    try:
        waiting: list[bytes] = []
        for queue in sorted(queues):
            for key in [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in (3, 6, 9)]:
                waiting.extend(client.lrange(key, 0, -1))
        delivered: list[bytes] = client.hvals("unacked")
    finally:
        client.close()
    return _ids(waiting), _ids(delivered)


def broker_job_ids(broker_url: str) -> set[str] | None:
    """Ids found in every message the Redis broker holds (queued or delivered, unacked); None if not Redis."""
    held = broker_messages(broker_url)
    return None if held is None else held[0] | held[1]


def _ids(messages: list[bytes]) -> set[str]:
    return {match.decode() for message in messages for match in UUID.findall(message)}


def reconcile(session: Session, *, celery: Celery, settings: Settings) -> dict[str, int]:
    """One round; the caller commits. Returns how many jobs were sent, re-sent and requeued (and webhooks added)."""
    counts = {"sent": enqueue_pending(session, celery=celery, min_age=PENDING_GRACE), "resent": 0, "requeued": 0}
    counts["webhooks"] = create_missing_deliveries(session)  # endings written outside a worker's transaction
    held = broker_messages(settings.broker_url, settings.gpu_classes)
    if held is None:
        return counts
    waiting, delivered = held
    now = utcnow()
    lost_queued = queries.queued_jobs_sent_before(
        session, sent_before=now - timedelta(seconds=settings.requeue_after_seconds)
    )
    for job in lost_queued:
        if str(job.id) not in waiting | delivered:
            log.warning("job %s is queued but the broker lost its message; sending it again", job.id)
            send_job(celery, job_id=job.id, kind=job.kind, session=session)
            job.enqueued_at = utcnow()
            counts["resent"] += 1
    orphans = queries.running_jobs_silent_since(session, silent_since=now - timedelta(seconds=settings.stale_seconds))
    for job_id, kind in orphans:
        if str(job_id) not in waiting:  # a message already waits: a worker will take it over
            log.warning("job %s is running without a heartbeat: its worker died; requeueing it", job_id)
            send_job(celery, job_id=job_id, kind=kind, session=session)
            counts["requeued"] += 1
    session.flush()
    return counts


def start_reconciler(factory: sessionmaker[Session], celery: Celery, settings: Settings) -> threading.Event:
    """Run ``reconcile`` every ``reconcile_interval_seconds`` in a daemon thread, and the retention sweep every
    ``retention_interval_seconds``; set the event to stop."""
    stop = threading.Event()
    swept_at = float("-inf")

    def loop() -> None:
        nonlocal swept_at
        while not stop.wait(settings.reconcile_interval_seconds):
            try:
                with factory.begin() as session:
                    counts = reconcile(session, celery=celery, settings=settings)
                if any(counts.values()):
                    log.info("reconciler: %s", counts)
                due = settings.retention_interval_seconds > 0
                if due and time.monotonic() - swept_at >= settings.retention_interval_seconds:
                    swept_at = time.monotonic()
                    # session_scope, not begin(): the files go once the deletions have committed.
                    for session in session_scope(factory):
                        if expired := apply_retention(session, settings):
                            log.info("retention: deleted %d finished job(s) past their tenant's retention", expired)
            except Exception as exc:  # noqa: BLE001 - broker or database down: try again next round
                log.warning("reconciler round failed: %s: %s", type(exc).__name__, redact(exc))

    threading.Thread(target=loop, name="ssah-reconciler", daemon=True).start()
    return stop

"""The Celery app used to send work by task name; the worker builds its app from the same config."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from celery import Celery

from service.gpu_routing import GPU_QUEUE, gpu_classes, job_queue
from service.settings import Settings, get_settings

# kind -> (task name, queue). GPU work and cheap CPU work never share a worker pool.
TASKS: dict[str, tuple[str, str]] = {
    "audit": ("ssah.audit", "gpu"),
    "evaluation": ("ssah.evaluation", "gpu"),
    "finetune": ("ssah.finetune", "gpu"),
    "comparison": ("ssah.comparison", "cpu"),
    "probe": ("ssah.probe", "gpu"),
}


def celery_config(settings: Settings) -> dict[str, object]:
    """The Celery settings shared by the sender (API) and the worker."""
    timeout = settings.broker_timeout_seconds
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "cpu",
        "task_routes": {name: {"queue": queue} for name, queue in TASKS.values()},
        # Late acks + prefetch 1: a worker that dies mid-audit leaves the message for another.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_timeout": timeout,
        "broker_connection_retry_on_startup": False,
        # One quick try: a dead broker must fail the send fast, the outbox catches up later.
        "broker_transport_options": {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.2,
        },
        "result_backend": None,
        "ssah_gpu_classes": list(settings.gpu_classes),  # read by send_job (service/gpu_routing.py)
    }


def make_celery(settings: Settings) -> Celery:
    """Build a Celery app from ``settings`` (no connection is made until the first send)."""
    app = Celery("ssah", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@lru_cache
def get_celery() -> Celery:
    """Return the process-wide Celery app built from the settings."""
    return make_celery(get_settings())


def send_job(app: Celery, *, job_id: uuid.UUID, kind: str, session: Any = None) -> str:
    """Publish the task for job ``job_id`` of ``kind``; raises if the broker refuses or is down.

    With GPU classes configured and a ``session``, GPU work goes to the queue of the smallest class
    that holds the job's model (``gpu_routing``). Returns the queue."""
    name, queue = TASKS[kind]
    classes = gpu_classes(app.conf.get("ssah_gpu_classes") or [])
    if session is not None:
        queue = job_queue(session, job_id=job_id, kind=kind, kind_queue=queue, classes=classes)
    elif queue == GPU_QUEUE and classes:
        queue = classes[-1].queue  # no row to size the model by: the largest class
    # retry=False: the outbox (jobs.enqueued_at) retries, so a dead broker must not stall the request.
    app.send_task(name, args=[str(job_id)], queue=queue, retry=False)
    return queue


def ping(app: Celery) -> None:
    """Raise if the broker cannot be reached."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.1, interval_max=0.2)

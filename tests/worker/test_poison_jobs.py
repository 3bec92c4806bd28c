"""A job that kills every worker that runs it is started at most ``max_job_attempts`` times, then fails saying why."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.models import Job
from service.settings import Settings
from tests.worker.conftest import add_job, add_model, reload
from worker import jobs
from worker.runner import run_job

AUDIT = {"samples": 4, "method": "wifv", "cuts": {"ru": 0.1, "scu": 0.05, "ucu": 0.1}}


def _died(db, tenant, *, attempts: int, phase: str = "scoring safety set (attempt 3)", progress: float = 0.4):
    """An audit whose worker died mid-run ``attempts`` times: running, its heartbeat long stale."""
    from service.models import utcnow

    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant))
    job = db.get(Job, job_id)
    job.status, job.attempts, job.progress, job.progress_message = "running", attempts, progress, phase
    job.started_at = job.updated_at = utcnow() - timedelta(hours=1)
    db.commit()
    return job_id


def _run(job_id, settings, factory, store, **kwargs):
    return run_job(job_id, "audit", jobs.BODIES["audit"], settings=settings, factory=factory, store=store, **kwargs)


@pytest.mark.parametrize("takeover", [False, True])  # found stale by a redelivery / taken over by a retry
def test_the_third_death_fails_the_job_with_the_count_and_the_last_phase(
    db, tenant, settings, factory, store, takeover: bool
):
    job_id = _died(db, tenant, attempts=3)
    assert _run(job_id, settings, factory, store, takeover=takeover) == "skipped"
    job = reload(db, job_id)
    assert (job.status, job.attempts) == ("failed", 3)
    assert "died 3 times" in job.error and "max_job_attempts=3" in job.error
    assert "last known phase: 'scoring safety set' at 40%" in job.error


def test_below_the_cap_the_job_runs_again(db, tenant, settings, factory, store):
    job_id = _died(db, tenant, attempts=2)
    assert _run(job_id, settings, factory, store) == "succeeded"
    assert (reload(db, job_id).status, reload(db, job_id).attempts) == ("succeeded", 3)


def test_the_cap_is_a_setting_defaulting_to_three(db, tenant, settings, factory, store):
    assert Settings().max_job_attempts == 3
    job_id = _died(db, tenant, attempts=3)
    assert _run(job_id, settings.model_copy(update={"max_job_attempts": 5}), factory, store) == "succeeded"
    job_id = _died(db, tenant, attempts=9)
    assert _run(job_id, settings.model_copy(update={"max_job_attempts": 0}), factory, store) == "succeeded"  # 0: off


def test_a_queued_job_is_not_counted_as_a_death(db, tenant, settings, factory, store):
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant))
    assert _run(job_id, settings.model_copy(update={"max_job_attempts": 1}), factory, store) == "succeeded"


def test_a_dead_pool_child_is_retried_at_once_and_the_retry_takes_the_job_over():
    from worker import app

    for task in (app.audit, app.evaluation, app.finetune, app.comparison):
        assert task.retry_on_worker_lost and task.default_retry_delay == 0 and task.acks_late

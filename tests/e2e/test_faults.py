"""Faults: a worker killed mid-job, Redis restarted with jobs queued, a job submitted while Redis is down.

Redis on this machine keeps nothing on disk, so a restart drops every queued and unacknowledged
message: the jobs survive because the database is the source of truth and the workers' reconciler
re-sends what the broker lost. Redis is always started again, whatever the test does.
"""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa

from service.models import UnitMap
from tests.e2e.conftest import (
    E2E_BROKER,
    final_write_held,
    poll,
    start_redis,
    stop_redis,
    wait_for_redelivery,
)

pytestmark = pytest.mark.slow


def unit_map_rows(factory, job_id: str) -> int:
    with factory() as session:
        return len(session.scalars(sa.select(UnitMap.id).where(UnitMap.job_id == uuid.UUID(job_id))).all())


def test_worker_killed_mid_audit_is_rerun_to_success_exactly_once(client, headers, model_id, worker, factory):
    worker.start()

    def submit() -> str:
        return client.post("/v1/audits", json={"model_id": model_id, "samples": 128}, headers=headers).json()["id"]

    with final_write_held(factory.kw["bind"], worker, submit) as job_id:
        location = f"/v1/audits/{job_id}"
        running = poll(client, location, headers, worker=worker, until=lambda job: job["status"] == "running")
        assert running["attempts"] == 1
        worker.kill()  # kill -9 before the result is committed: the message stays unacknowledged in Redis

    wait_for_redelivery(running)
    worker.start()
    job = poll(client, location, headers, timeout=180, worker=worker)
    assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 2, None), worker.log()
    assert unit_map_rows(factory, job["id"]) == 1
    assert client.get(f"{location}/unit-map", headers=headers).json()["config"]["samples"] == 128


def test_redis_restart_with_jobs_queued_loses_none(client, headers, model_id, worker, factory):
    locations = [
        client.post("/v1/audits", json={"model_id": model_id, "samples": 4}, headers=headers).headers["Location"]
        for _ in range(3)
    ]
    assert redis.Redis.from_url(E2E_BROKER).llen("gpu") == 3  # queued, no worker yet
    try:
        stop_redis()
    finally:
        start_redis()
    assert redis.Redis.from_url(E2E_BROKER).llen("gpu") == 0  # the restart dropped every message

    worker.start()
    for location in locations:
        job = poll(client, location, headers, worker=worker)
        assert (job["status"], job["attempts"]) == ("succeeded", 1)
        assert unit_map_rows(factory, job["id"]) == 1


def test_job_submitted_while_redis_is_down_runs_once_it_is_back(client, headers, model_id, worker, factory):
    worker.start()
    try:
        stop_redis()
        r = client.post("/v1/audits", json={"model_id": model_id, "samples": 4}, headers=headers)
        assert r.status_code == 202 and r.json()["enqueued_at"] is None
    finally:
        start_redis()
    job = poll(client, r.headers["Location"], headers, timeout=90, worker=worker)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    assert job["enqueued_at"] is not None and unit_map_rows(factory, job["id"]) == 1

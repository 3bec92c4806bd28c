"""A worker killed with SIGKILL mid-audit: a restarted worker runs the job again, and its result exists once."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from service.models import UnitMap
from tests.e2e.conftest import poll, wait_for_redelivery
from tests.reliability.conftest import Stack, audit_held_running, tenant_jobs


@pytest.mark.slow  # ~35 s: waits out the visibility timeout of the killed worker's message
def test_worker_killed_mid_job_is_rerun_by_a_new_worker_with_one_result(stack: Stack, client, tenant, model_id, worker):
    with audit_held_running(stack, worker, client, {"model_id": model_id, "samples": 128}) as job_id:
        location = f"/v1/audits/{job_id}"
        running = client.get(location).json()
        assert running["attempts"] == 1
        worker.kill()  # before its result is committed; no ack, no cleanup: the message stays unacked

    wait_for_redelivery(running)  # then the new worker takes the message back as it starts
    worker.start()
    job = poll(client, location, {}, worker=worker, timeout=120)
    assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 2, None), stack.logs()
    with stack.factory() as session:
        rows = session.scalars(sa.select(UnitMap).where(UnitMap.job_id == uuid.UUID(job["id"]))).all()
    assert len(rows) == 1 and rows[0].summary["config"]["samples"] == 128
    published = stack.artifacts.path / str(tenant[0]) / "jobs" / job["id"]
    assert sorted(p.name for p in published.iterdir()) == ["unit_map", "unit_map.zip"]
    assert len(tenant_jobs(stack, tenant[0])) == 1
    assert client.get(f"{location}/unit-map/artifact").status_code == 200

"""A worker killed with SIGKILL mid-audit: a restarted worker runs the job again, and its result exists once."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa

from service.models import UnitMap
from tests.e2e.conftest import WORKER_ENV, poll
from tests.reliability.conftest import Stack, tenant_jobs


@pytest.mark.slow  # ~35 s: waits out the visibility timeout of the killed worker's message
def test_worker_killed_mid_job_is_rerun_by_a_new_worker_with_one_result(stack: Stack, client, tenant, model_id,
                                                                        worker):
    location = client.post("/v1/audits", json={"model_id": model_id, "samples": 128}).headers["Location"]
    running = poll(client, location, {}, worker=worker, timeout=60,
                   until=lambda job: job["status"] == "running" and job["progress"] >= 0.05)
    assert running["attempts"] == 1
    worker.kill()  # no ack, no cleanup: the message stays unacknowledged in Redis

    # Redis hands the message out again once it is older than the visibility timeout, at the new worker's
    # first scan 10 s after it starts (later scans come only every 100 s): start it once the message is due.
    due = datetime.fromisoformat(running["started_at"]).timestamp() + int(WORKER_ENV["SSAH_VISIBILITY_TIMEOUT"])
    time.sleep(min(max(due + 0.5 - time.time(), 0), 15))
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

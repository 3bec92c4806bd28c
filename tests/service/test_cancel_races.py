"""Cancels racing each other or the worker's progress writes answer 200 or 409, never 500."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.admin import create_api_key
from service.api.v1.common import load_job
from service.auth import Principal
from service.db import get_sessionmaker
from service.errors import Conflict
from service.jobs import cancel_job
from service.main import create_app
from service.models import Job, ModelSource, Tenant
from service.settings import Settings
from tests.service.conftest import Tenant_


def test_a_progress_write_between_the_read_and_the_cancel_does_not_break_it(db: Session, alice: Tenant_) -> None:
    job = Job(tenant_id=alice.id, kind="audit", status="running", params={})
    db.add(job)
    db.commit()
    principal = Principal(tenant_id=alice.id, key_id=uuid.uuid4())
    loaded = load_job(db, principal, job.id, kind=None)  # the API read the row (version 1)...
    worker_write = sa.update(Job).where(Job.id == job.id).values(progress=0.5, version=Job.version + 1)
    db.execute(worker_write.execution_options(synchronize_session=False))  # ...a worker wrote (another process)
    cancelled = cancel_job(db, job=loaded)
    assert (cancelled.status, cancelled.cancel_requested, cancelled.progress) == ("running", True, 0.5)
    assert cancelled.version == 3


def test_a_job_that_finished_after_the_read_is_409(db: Session, alice: Tenant_) -> None:
    job = Job(tenant_id=alice.id, kind="audit", status="running", params={})
    db.add(job)
    db.commit()
    loaded = load_job(db, Principal(tenant_id=alice.id, key_id=uuid.uuid4()), job.id, kind=None)
    finished = sa.update(Job).where(Job.id == job.id).values(status="succeeded", version=Job.version + 1)
    db.execute(finished.execution_options(synchronize_session=False))
    with pytest.raises(Conflict, match="already succeeded"):
        cancel_job(db, job=loaded)


@pytest.fixture
def live(database_url: str) -> Iterator[tuple[TestClient, dict[str, str], uuid.UUID]]:
    """An app on real, separate connections (so requests really run at once), and a tenant removed afterwards."""
    factory = get_sessionmaker(database_url)
    name = f"race-{uuid.uuid4().hex[:8]}"
    with factory.begin() as session:
        key = create_api_key(session, name)
        tenant_id = session.scalars(sa.select(Tenant.id).where(Tenant.name == name)).one()
        session.add(ModelSource(tenant_id=tenant_id, name="m", source="builtin:tiny-llama"))
    app = create_app(
        Settings(database_url=database_url, broker_url="memory://", rate_limit_per_minute=0, api_key_cache_seconds=60)
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, {"Authorization": f"Bearer {key}"}, tenant_id
    finally:
        with factory.begin() as session:
            session.execute(sa.delete(Tenant).where(Tenant.id == tenant_id))


def _race(client: TestClient, headers: dict[str, str], path: str, n: int) -> list[int]:
    barrier, statuses = threading.Barrier(n), []

    def cancel() -> None:
        barrier.wait()
        statuses.append(client.post(path, headers=headers).status_code)

    threads = [threading.Thread(target=cancel) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize(("status", "expected"), [("running", {200}), ("queued", {200, 409})])
def test_twelve_parallel_cancels_answer_200_or_409(live, database_url: str, status: str, expected: set[int]) -> None:
    client, headers, tenant_id = live
    with get_sessionmaker(database_url).begin() as session:
        job = Job(tenant_id=tenant_id, kind="audit", status=status, params={})
        session.add(job)
    statuses = _race(client, headers, f"/v1/jobs/{job.id}/cancel", 12)
    assert set(statuses) == expected, statuses
    if status == "queued":
        assert statuses.count(200) == 1  # one cancel cancelled it; the others found it cancelled

"""Embedded mode (SQLite): the per-tenant job limit holds under concurrent submissions too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from service.admin import create_api_key
from service.db import get_sessionmaker, session_scope
from service.limits import LimitExceeded, check_concurrent_jobs
from service.main import create_app
from service.models import Job, Tenant
from service.settings import Settings
from tests.service.conftest import alembic_config

LIMIT = 5


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'ssah.db'}"
    command.upgrade(alembic_config(url), "head")
    for session in session_scope(get_sessionmaker(url)):
        key = create_api_key(session, "solo")
    settings = Settings(
        database_url=url,
        broker_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        rate_limit_per_minute=0,
        max_concurrent_jobs_per_tenant=LIMIT,
        api_key_cache_seconds=60,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield settings, client, {"Authorization": f"Bearer {key}"}


def test_fifteen_parallel_submits_with_limit_five_accept_exactly_five(embedded) -> None:
    _, client, headers = embedded
    model = client.post("/v1/models", json={"name": "m", "source": "builtin:tiny-llama"}, headers=headers).json()["id"]
    barrier, statuses = threading.Barrier(15), []

    def submit() -> None:
        barrier.wait()
        statuses.append(client.post("/v1/audits", json={"model_id": model}, headers=headers).status_code)

    threads = [threading.Thread(target=submit) for _ in range(15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * LIMIT + [429] * (15 - LIMIT)
    assert client.get("/v1/jobs", headers=headers).json()["total"] == LIMIT


def test_a_second_submitter_counts_after_the_first_commits(embedded) -> None:
    # The race, step by step: A has counted 4 and added its job, uncommitted; B counts now.
    settings, _, _ = embedded
    factory = get_sessionmaker(settings.database_url)
    with factory() as setup:
        tenant_id = setup.scalars(sa.select(Tenant.id)).one()
        setup.add_all([Job(tenant_id=tenant_id, kind="audit", params={}) for _ in range(LIMIT - 1)])
        setup.commit()
    first = factory()
    check_concurrent_jobs(first, settings, tenant_id=tenant_id)
    first.add(Job(tenant_id=tenant_id, kind="audit", params={}))
    first.flush()
    outcome: list[object] = []

    def second() -> None:
        with factory() as session:
            try:
                check_concurrent_jobs(session, settings, tenant_id=tenant_id)
                outcome.append("accepted")
            except LimitExceeded as exc:
                outcome.append(exc.status)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1.0)  # without the lock B counts 4 at once and is accepted: a sixth job
    waited = thread.is_alive()
    first.commit()
    first.close()
    thread.join()
    assert waited and outcome == [429]

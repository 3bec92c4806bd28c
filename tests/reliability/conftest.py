"""A private stack for tests/reliability: PostgreSQL, Redis, a uvicorn API and a Celery worker, all restartable.

Faults are injected into these processes only (the machine's shared services are left alone).
Worker clocks are the short ones of tests/e2e (reconciler every 2 s, stale after 6 s).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from service.admin import create_api_key
from service.models import Job, Tenant
from service.settings import Settings
from tests.e2e.conftest import Worker, final_write_held, poll
from tests.reliability.services import Api, Postgres, RedisServer, Tmpfs
from tests.service.conftest import build_database


@dataclass
class Stack:
    base: Path
    pg: Postgres
    redis: RedisServer
    api: Api
    worker: Worker
    artifacts: Tmpfs
    models: Path  # local model directories live here (the model policy's allowed root)
    factory: sessionmaker[Session]  # NullPool: a restarted PostgreSQL leaves no dead pooled connection

    def logs(self) -> str:
        return f"--- worker\n{self.worker.log()}\n--- api\n{self.api.log()}\n--- postgres\n{self.pg.tail()}"


# Package scope: the processes stop once tests/reliability is done, not at the end of the whole run.
@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="ssah-reliability-"))
    base.chmod(0o755)  # the postgres user must reach its data directory below
    started: list = []
    try:
        (base / "pg").mkdir()
        pg = Postgres(base / "pg")
        pg.start()
        started.append(lambda: pg.stop("immediate") if pg.running() else None)
        build_database(pg.url)
        (base / "redis").mkdir()
        broker = RedisServer(base / "redis")
        broker.start()
        started.append(broker.stop)
        artifacts = Tmpfs(base / "artifacts")
        started.append(artifacts.close)
        models = base / "models"
        models.mkdir()
        env = {
            "SSAH_DATABASE_URL": pg.url,
            "SSAH_BROKER_URL": broker.url,
            "SSAH_ARTIFACT_DIR": str(artifacts.path),
            "SSAH_ALLOWED_LOCAL_ROOTS": str(models),
            "SSAH_LOG_LEVEL": "WARNING",
            # Pollers here outpace a real dashboard; the limiter stays on (it must survive a Redis restart).
            "SSAH_RATE_LIMIT_PER_MINUTE": "100000",
        }
        api = Api(env, base / "api.log")
        api.start()
        started.append(api.stop)
        settings = Settings(database_url=pg.url, broker_url=broker.url, artifact_dir=artifacts.path)
        worker = Worker(settings, base / "worker.log", env={"SSAH_ALLOWED_LOCAL_ROOTS": str(models)})
        started.append(worker.kill)
        engine = sa.create_engine(pg.url, poolclass=NullPool)
        started.append(engine.dispose)
        yield Stack(base, pg, broker, api, worker, artifacts, models, sessionmaker(engine, expire_on_commit=False))
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"reliability teardown: {exc}")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def worker(stack: Stack) -> Worker:
    """The stack's worker, (re)started if a previous test left it dead."""
    if stack.worker.process is None or stack.worker.process.poll() is not None:
        stack.worker.start()
    return stack.worker


@pytest.fixture
def tenant(stack: Stack) -> tuple[uuid.UUID, str]:
    """A fresh tenant per test (so counting its jobs counts this test's jobs) and its API key."""
    name = f"rel-{uuid.uuid4().hex[:8]}"
    with stack.factory.begin() as session:
        key = create_api_key(session, name)
        tenant_id = session.scalars(sa.select(Tenant.id).where(Tenant.name == name)).one()
    return tenant_id, key


@pytest.fixture
def client(stack: Stack, tenant: tuple[uuid.UUID, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api.url, headers={"Authorization": f"Bearer {tenant[1]}"}, timeout=10) as client:
        yield client


@pytest.fixture
def model_id(client: httpx.Client) -> str:
    r = client.post("/v1/models", json={"name": "tiny", "source": "builtin:tiny-llama"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def tenant_jobs(stack: Stack, tenant_id: uuid.UUID) -> list[Job]:
    with stack.factory() as session:
        return list(session.scalars(sa.select(Job).where(Job.tenant_id == tenant_id).order_by(Job.created_at)))


@contextmanager
def audit_held_running(stack: Stack, worker: Worker, client: httpx.Client, body: dict) -> Iterator[str]:
    """An audit that stays running (see ``final_write_held``) until the block ends."""

    def submit() -> str:
        r = client.post("/v1/audits", json=body)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    with final_write_held(stack.factory.kw["bind"], worker, submit) as job_id:
        poll(client, f"/v1/jobs/{job_id}", {}, worker=worker, timeout=60, until=lambda job: job["status"] == "running")
        yield job_id

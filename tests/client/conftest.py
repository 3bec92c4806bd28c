"""Fixtures: the real app served by uvicorn on loopback, on a PostgreSQL database built by the migrations.

The client under test talks HTTP to that server; the tests play the worker by changing job rows
through their own session (the job's version, and so its ETag, moves as a worker's writes do).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from service.admin import create_api_key
from service.main import create_app
from service.models import Job, Tenant, UnitMap, utcnow
from service.settings import Settings
from ssah_client import Client
from tests.service.conftest import DEFAULT_BROKER, SUMMARY, database_url  # noqa: F401  (the fixture)


@dataclass
class Server:
    url: str
    app: FastAPI
    settings: Settings


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[sa.Engine]:  # noqa: F811
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(db_engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(db_engine, expire_on_commit=False)


@pytest.fixture
def broker_url() -> str:
    import os

    url = os.environ.get("SSAH_TEST_BROKER_URL", DEFAULT_BROKER)
    redis.Redis.from_url(url).flushdb()  # the rate limiter's counters of earlier tests
    return url


@pytest.fixture
def make_server(database_url: str, broker_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:  # noqa: F811
    """Start ``uvicorn`` with the app for these settings (keyword overrides) on a free loopback port."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def make(**overrides: object) -> Server:
        values = {
            "database_url": database_url,
            "broker_url": broker_url,
            "artifact_dir": tmp_path / "artifacts",
            "api_key_cache_seconds": 0.0,
            **overrides,
        }
        settings = Settings(**values)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        running.append((server, thread))
        return Server(f"http://127.0.0.1:{port}", app, settings)

    yield make
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@dataclass
class Tenant_:
    id: uuid.UUID
    key: str


@pytest.fixture
def tenant(factory: sessionmaker[Session]) -> Tenant_:
    """A tenant of its own per test: the tests share one database and never see each other's rows."""
    name = f"client-{uuid.uuid4().hex[:12]}"
    with factory() as session:
        key = create_api_key(session, name)
        session.commit()
        tenant_id = session.scalars(sa.select(Tenant.id).where(Tenant.name == name)).one()
    return Tenant_(tenant_id, key)


@pytest.fixture
def client(server: Server, tenant: Tenant_) -> Iterator[Client]:
    with Client(server.url, tenant.key, poll_interval=0.01) as client:
        yield client


def set_job(factory: sessionmaker[Session], job_id: str, **values: object) -> None:
    """Change a job as the worker would (through the ORM, so its version and ETag move)."""
    with factory() as session:
        job = session.get(Job, uuid.UUID(str(job_id)))
        assert job is not None
        for name, value in values.items():
            setattr(job, name, value)
        session.commit()


def succeed(factory: sessionmaker[Session], job_id: str, *, artifact_uri: str | None = None, **values: object) -> None:
    """Finish a job as a worker does; an audit also gets its unit map."""
    set_job(factory, job_id, status="succeeded", progress=1.0, started_at=utcnow(), finished_at=utcnow(), **values)
    with factory() as session:
        if session.get(Job, uuid.UUID(str(job_id))).kind == "audit":  # type: ignore[union-attr]
            session.add(UnitMap(job_id=uuid.UUID(str(job_id)), summary=SUMMARY, artifact_uri=artifact_uri))
            session.commit()

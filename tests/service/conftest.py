"""Fixtures: a real PostgreSQL database built by the migrations, each test rolled back; real Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.admin import create_api_key
from service.main import create_app
from service.models import Job, ModelSource, Tenant, UnitMap, utcnow
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/ssah_test"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"


def recreate_database(url: str) -> None:
    """Drop and create the database named in ``url``, through the server's ``postgres`` database."""
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def build_database(url: str) -> None:
    """A fresh database at ``url``, its schema built by the Alembic migrations (never create_all)."""
    recreate_database(url)
    command.upgrade(alembic_config(url), "head")


def head_revision(config: Config) -> str:
    """The newest migration's id, so tests need no edit each time a revision is added."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config).get_current_head()


def alembic_config(url: str) -> Config:
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
def database_url() -> str:
    """The test database URL (``SSAH_TEST_DATABASE_URL``), freshly built by the Alembic migrations."""
    url = os.environ.get("SSAH_TEST_DATABASE_URL", DEFAULT_DB)
    build_database(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: sa.Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions bound to one connection whose outer transaction is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    yield sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    outer.rollback()
    connection.close()


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def broker_url() -> str:
    return os.environ.get("SSAH_TEST_BROKER_URL", DEFAULT_BROKER)


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def make_app(
    database_url: str, session_factory: sessionmaker[Session], broker_url: str, tmp_path: Path
) -> Callable[..., FastAPI]:
    """Build an app on the test transaction; keyword arguments override settings."""

    def make(**overrides: object) -> FastAPI:
        values = {
            "database_url": database_url,
            "broker_url": broker_url,
            "artifact_dir": tmp_path / "artifacts",
            "api_key_cache_seconds": 0.0,
            **overrides,
        }
        app = create_app(Settings(**values))
        app.state.sessionmaker = session_factory
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., FastAPI], redis_client: redis.Redis) -> FastAPI:
    return make_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class Tenant_:
    """A tenant as the tests see it: its id, its key and ready-made auth headers."""

    def __init__(self, session: Session, name: str):
        self.key = create_api_key(session, name)
        session.commit()
        self.id = session.scalars(sa.select(Tenant.id).where(Tenant.name == name)).one()
        self.headers = {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def alice(db: Session) -> Tenant_:
    return Tenant_(db, "alice")


@pytest.fixture
def bob(db: Session) -> Tenant_:
    return Tenant_(db, "bob")


@pytest.fixture
def alice_model(client: TestClient, alice: Tenant_) -> str:
    r = client.post("/v1/models", json={"name": "smol", "source": "builtin:smollm2"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def set_job(db: Session, job_id: str, **values: object) -> Job:
    """Change a job as a worker would (through the ORM, so its version is bumped)."""
    db.expire_all()  # the API changed rows behind this session's back
    job = db.get(Job, uuid.UUID(job_id))
    assert job is not None
    for name, value in values.items():
        setattr(job, name, value)
    db.commit()
    return job


SUMMARY = {
    "classes": {
        "SCU": {"units": 12, "unit_fraction": 0.01, "param_fraction": 0.004},
        "UCU": {"units": 120, "unit_fraction": 0.1, "param_fraction": 0.05},
        "CU": {"units": 30, "unit_fraction": 0.025, "param_fraction": 0.01},
        "RU": {"units": 100, "unit_fraction": 0.08, "param_fraction": 0.03},
    },
    "layers": [{"SCU": i, "UCU": 10 - i, "CU": 1, "RU": 2} for i in range(5)],
    "config": {"method": "wifv", "samples": 128},
    "model": {"source": "builtin:smollm2"},
    "data": {"safety": "builtin", "utility": "builtin"},
}


def succeeded_audit(
    client: TestClient, db: Session, tenant: Tenant_, model_id: str, *, artifact_uri: str | None = None
) -> str:
    """Create an audit through the API and finish it with a unit map, as the worker will."""
    r = client.post("/v1/audits", json={"model_id": model_id}, headers=tenant.headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    set_job(db, job_id, status="succeeded", progress=1.0, started_at=utcnow(), finished_at=utcnow())
    db.add(UnitMap(job_id=uuid.UUID(job_id), summary=SUMMARY, artifact_uri=artifact_uri))
    db.commit()
    return job_id


def register_model(db: Session, tenant: Tenant_, name: str = "m") -> str:
    model = ModelSource(tenant_id=tenant.id, name=name, source="org/model")
    db.add(model)
    db.commit()
    return str(model.id)

"""Fixtures: task bodies run in-process on real PostgreSQL (each test rolled back) and tiny models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.admin import create_api_key
from service.models import Dataset, Job, ModelSource, Tenant
from service.settings import Settings
from tests.service.conftest import broker_url, database_url, db, engine, redis_client, session_factory  # noqa: F401
from worker.store import LocalStore


@pytest.fixture
def settings(tmp_path: Path, database_url: str, broker_url: str) -> Settings:  # noqa: F811
    # heartbeat_seconds is long: the test sessions share one connection, which threads must not share.
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        artifact_dir=tmp_path / "artifacts",
        heartbeat_seconds=3600,
        progress_interval_seconds=0.0,
        stale_seconds=60,
        eval_sample_limit=2,
        model_cache_size=2,
    )


@pytest.fixture
def store(settings: Settings) -> LocalStore:
    return LocalStore(settings.artifact_dir)


@pytest.fixture
def tenant(db: Session) -> uuid.UUID:  # noqa: F811
    create_api_key(db, "acme")
    db.commit()
    return db.scalars(sa.select(Tenant.id).where(Tenant.name == "acme")).one()


def add_model(db: Session, tenant: uuid.UUID, source: str = "builtin:tiny-llama") -> uuid.UUID:
    model = ModelSource(tenant_id=tenant, name=f"m-{uuid.uuid4().hex[:6]}", source=source)
    db.add(model)
    db.commit()
    return model.id


def add_job(db: Session, tenant: uuid.UUID, kind: str, params: dict, model_id: uuid.UUID | None = None) -> uuid.UUID:
    job = Job(id=uuid.uuid4(), tenant_id=tenant, kind=kind, params=params, model_id=model_id)
    db.add(job)
    db.commit()
    return job.id


def add_dataset(
    db: Session, settings: Settings, tenant: uuid.UUID, text: str, *, name: str = "data.jsonl", fmt: str = "jsonl"
) -> uuid.UUID:
    """A dataset stored as the API stores uploads (content-addressed, no extension)."""
    relative = f"{tenant}/datasets/{uuid.uuid4().hex}"
    path = Path(settings.artifact_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    row = Dataset(
        tenant_id=tenant,
        name=name,
        format=fmt,
        rows=text.count("\n"),
        size_bytes=len(text),
        sha256="0" * 64,
        path=relative,
    )
    db.add(row)
    db.commit()
    return row.id


def reload(db: Session, job_id: uuid.UUID) -> Job:
    db.expire_all()
    return db.get(Job, job_id)


@pytest.fixture
def factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:  # noqa: F811
    return session_factory

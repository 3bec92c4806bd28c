"""Migration 0003: probe jobs and their results come and go together, and 0002's constraint comes back."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa


def _insert_job(conn: sa.Connection, tenant: uuid.UUID, kind: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    now = datetime.now(timezone.utc)
    conn.execute(
        sa.text(
            "INSERT INTO jobs (id, tenant_id, kind, status, progress, params, created_at, updated_at, attempts,"
            " cancel_requested, version) VALUES (:id, :t, :k, 'queued', 0, '{}', :now, :now, 0, false, 1)"
        ),
        {"id": job_id, "t": tenant, "k": kind, "now": now},
    )
    return job_id


def test_0003_up_down_up_keeps_other_jobs_and_restores_the_kind_check(database_url: str):
    from alembic import command
    from sqlalchemy.engine import make_url

    from tests.service.conftest import alembic_config, recreate_database

    scratch = make_url(database_url).set(database=make_url(database_url).database + "_m0003")
    url = scratch.render_as_string(hide_password=False)
    recreate_database(url)
    config = alembic_config(url)
    engine = sa.create_engine(url)
    try:
        command.upgrade(config, "0003")
        assert "probe_results" in sa.inspect(engine).get_table_names()
        tenant = uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'a', now())"), {"id": tenant})
            audit = _insert_job(conn, tenant, "audit")
            probe = _insert_job(conn, tenant, "probe")
            conn.execute(
                sa.text("INSERT INTO probe_results (id, job_id, summary, created_at) VALUES (:id, :j, '{}', now())"),
                {"id": uuid.uuid4(), "j": probe},
            )
        command.downgrade(config, "0002")
        assert "probe_results" not in sa.inspect(engine).get_table_names()
        with engine.begin() as conn:
            kinds = conn.execute(sa.text("SELECT id, kind FROM jobs")).all()
            assert kinds == [(audit, "audit")]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            _insert_job(conn, tenant, "probe")
        command.upgrade(config, "0003")
        with engine.begin() as conn:
            _insert_job(conn, tenant, "probe")
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            _insert_job(conn, tenant, "nonsense")
    finally:
        engine.dispose()

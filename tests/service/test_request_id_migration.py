"""Migration 0004: audit_log.client_request_id comes and goes; existing entries keep their request_id."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from tests.service.conftest import alembic_config, recreate_database


def test_0004_up_down_up(database_url: str) -> None:
    scratch = make_url(database_url).set(database=make_url(database_url).database + "_m0004")
    url = scratch.render_as_string(hide_password=False)
    recreate_database(url)
    config = alembic_config(url)
    engine = sa.create_engine(url)

    def columns() -> set[str]:
        return {c["name"] for c in sa.inspect(engine).get_columns("audit_log")}

    try:
        command.upgrade(config, "0003")
        tenant = uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'a', now())"), {"id": tenant})
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (id, tenant_id, key_prefix, action, resource_type, details, request_id,"
                    " created_at) VALUES (:id, :t, 'ssah_x', 'model.register', 'model', '{}', 'old-id', now())"
                ),
                {"id": uuid.uuid4(), "t": tenant},
            )
        command.upgrade(config, "0004")
        assert "client_request_id" in columns()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT request_id, client_request_id FROM audit_log")).one() == (
                "old-id",
                None,
            )
        command.downgrade(config, "0003")
        assert "client_request_id" not in columns()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT request_id FROM audit_log")).scalar_one() == "old-id"
        command.upgrade(config, "head")
        assert "client_request_id" in columns()
    finally:
        engine.dispose()
        admin = sa.create_engine(scratch.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        admin.dispose()

"""Health, readiness, metrics, the OpenAPI copy and problem+json for framework errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from service.openapi import render
from tests.service.conftest import REPO, Tenant_


def test_healthz_and_readyz(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_stays_ready_while_only_the_broker_is_down_and_says_so(make_app: Callable[..., FastAPI]):
    with TestClient(make_app(broker_url="redis://127.0.0.1:1/0")) as client:
        r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded" and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("down: ") and "outbox" in body["detail"]


def test_readyz_is_503_naming_the_database_when_it_is_down(make_app: Callable[..., FastAPI]):
    app = make_app()
    app.state.sessionmaker = sessionmaker(bind=sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/x"))
    with TestClient(app) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert list(r.json()["down"]) == ["database"] and "database" in r.json()["detail"]


def test_metrics_count_requests_by_route_template(client: TestClient, alice: Tenant_, alice_model: str):
    job = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    client.get(f"/v1/audits/{job}", headers=alice.headers)
    client.get(f"/v1/audits/{job}", headers=alice.headers)
    text = client.get("/metrics").text
    assert 'ssah_http_requests_total{method="GET",route="/v1/audits/{audit_id}",status="200"} 2.0' in text
    assert job not in text
    assert 'ssah_jobs{kind="audit",status="queued"}' in text


def test_framework_errors_are_problems(client: TestClient, alice: Tenant_):
    r = client.get("/v1/nowhere", headers=alice.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["instance"] == "/v1/nowhere"
    r = client.delete("/v1/audits", headers=alice.headers)
    assert r.status_code == 405 and r.json()["status"] == 405
    r = client.post("/v1/audits", content=b"{not json", headers={**alice.headers, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"].startswith("body")


def test_unexpected_error_is_500_problem_with_request_id(app: FastAPI, alice: Tenant_):
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    # The server's own id (the one its logs carry), not the client's "req-123".
    request_id = r.json()["request_id"]
    assert len(request_id) == 32 and request_id != "req-123" and "kaboom" not in r.text


def test_unreachable_database_is_503_problem_with_retry_after(app: FastAPI):
    @app.get("/db-down")
    def db_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/db-down")
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:ssah:problem:database-unavailable" and "SELECT" not in r.text


def test_openapi_copy_in_repo_matches_the_app(app: FastAPI):
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == render(app), "docs/openapi.json drifted: run python -m service.openapi > docs/openapi.json"
    spec = json.loads(committed)
    assert spec["info"]["title"] == "SSAH Audit"
    assert all(p.startswith("/v1/") for p in spec["paths"] if p not in ("/healthz", "/readyz", "/metrics"))


def test_service_stays_light():
    # The engine's config modules are welcome (the request schemas derive from them); torch is not.
    code = (
        "import sys, service.main, service.admin, service.jobs;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch','transformers','worker'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_migrations_upgrade_downgrade_upgrade(database_url: str):
    import sqlalchemy as sa
    from alembic import command
    from sqlalchemy.engine import make_url

    from tests.service.conftest import alembic_config, head_revision, recreate_database

    scratch = make_url(database_url).set(database=make_url(database_url).database + "_migrations")
    url = scratch.render_as_string(hide_password=False)
    recreate_database(url)
    config = alembic_config(url)
    engine = sa.create_engine(url)
    try:
        command.upgrade(config, "head")
        tables = set(sa.inspect(engine).get_table_names())
        assert {"jobs", "api_keys", "unit_maps", "scores", "idempotency_keys", "audit_log"} <= tables
        command.downgrade(config, "0001")  # 0002: the audit log, 0003: probe results, 0005: records, 0006: webhooks
        assert set(sa.inspect(engine).get_table_names()) == tables - {
            "audit_log",
            "probe_results",
            "evaluation_records",
            "webhook_deliveries",
        }
        command.downgrade(config, "base")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision(config)
        assert "ix_audit_log_tenant_id_created_at" in {i["name"] for i in sa.inspect(engine).get_indexes("audit_log")}
        assert "ck_jobs_status" in {c["name"] for c in sa.inspect(engine).get_check_constraints("jobs")}
    finally:
        engine.dispose()

"""/metrics: no tenant ids, only work in flight, and scrapes do not cost a query each."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.models import Job
from tests.service.conftest import Tenant_


def test_scrapes_share_one_count_of_active_jobs_without_tenant_ids(
    make_app, session_factory: sessionmaker[Session], db: Session, alice: Tenant_, bob: Tenant_, redis_client
) -> None:
    db.add_all([Job(tenant_id=alice.id, kind="audit", status="succeeded", params={}) for _ in range(30)])
    db.add_all([Job(tenant_id=bob.id, kind="audit", status="queued", params={}) for _ in range(2)])
    db.add(Job(tenant_id=alice.id, kind="evaluation", status="running", params={}))
    db.commit()
    statements: list[str] = []
    connection = session_factory.kw["bind"]

    def listener(conn, cursor, statement, *rest) -> None:
        statements.append(statement)

    sa.event.listen(connection, "before_cursor_execute", listener)
    try:
        with TestClient(make_app(metrics_cache_seconds=3600)) as client:
            texts = [client.get("/metrics").text for _ in range(20)]
    finally:
        sa.event.remove(connection, "before_cursor_execute", listener)
    counts = [s for s in statements if "FROM jobs" in s]
    assert len(counts) == 1 and "status IN" in counts[0]  # one query for 20 scrapes, over active rows only
    text = texts[-1]
    assert 'ssah_jobs{kind="audit",status="queued"} 2.0' in text
    assert 'ssah_jobs{kind="evaluation",status="running"} 1.0' in text
    jobs_family = text.split("# HELP ssah_jobs ")[1].split("# HELP")[0]  # the gauge's lines, not the worker's metrics
    assert 'status="queued"' in jobs_family and "succeeded" not in jobs_family  # history is not counted
    assert str(alice.id) not in text and str(bob.id) not in text


def test_a_deployment_can_put_metrics_behind_a_token(make_app, redis_client) -> None:
    with TestClient(make_app(metrics_token="m-token")) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer m-token"})
        assert r.status_code == 200 and "ssah_http_requests_total" in r.text

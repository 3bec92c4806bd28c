"""Deleting models, datasets and jobs with their artifacts, refused while a job uses them; the retention sweep."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.admin import set_retention
from service.db import session_scope
from service.models import AuditLogEntry, Dataset, Job, Score, UnitMap, utcnow
from service.retention import apply_retention
from tests.service.conftest import Tenant_, set_job, succeeded_audit


def artifacts_of(app: FastAPI, tenant: Tenant_, job_id: str) -> Path:
    """Write a job's artifact folder as the worker does (``<tenant>/jobs/<job>/``) and return it."""
    folder = Path(app.state.settings.artifact_dir) / str(tenant.id) / "jobs" / job_id
    (folder / "unit_map").mkdir(parents=True)
    (folder / "unit_map" / "summary.json").write_text("{}")
    return folder


def audit_actions(db: Session, resource_id: str) -> list[str]:
    db.expire_all()
    return list(
        db.scalars(
            sa.select(AuditLogEntry.action)
            .where(AuditLogEntry.resource_id == uuid.UUID(resource_id))
            .order_by(AuditLogEntry.created_at)
        )
    )


def upload(client: TestClient, tenant: Tenant_, name: str, content: bytes = b'{"prompt": "p", "response": "r"}\n'):
    r = client.post("/v1/datasets", files={"file": (name, content)}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_deleting_a_finished_audit_removes_its_results_artifacts_and_is_audited(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    audit = succeeded_audit(client, db, alice, alice_model, artifact_uri=f"{alice.id}/jobs/x/unit_map")
    folder = artifacts_of(app, alice, audit)
    other = artifacts_of(app, alice, str(uuid.uuid4()))  # another job's folder stays

    r = client.delete(f"/v1/audits/{audit}", headers=alice.headers)
    assert r.status_code == 204, r.text
    assert client.get(f"/v1/audits/{audit}", headers=alice.headers).status_code == 404
    db.expire_all()
    assert db.get(Job, uuid.UUID(audit)) is None
    assert db.scalar(sa.select(sa.func.count()).select_from(UnitMap).where(UnitMap.job_id == uuid.UUID(audit))) == 0
    assert not folder.exists() and other.exists()
    assert audit_actions(db, audit) == ["job.submit", "job.delete"]
    assert client.delete(f"/v1/audits/{audit}", headers=alice.headers).status_code == 404


def test_a_queued_or_running_job_is_not_deleted(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    job = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    for status in ("queued", "running"):
        set_job(db, job, status=status)
        r = client.delete(f"/v1/jobs/{job}", headers=alice.headers)
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("resource-in-use")
        assert r.json()["jobs"] == [{"id": job, "kind": "audit", "status": status}]
        assert f"is {status}; cancel it" in r.json()["detail"]
    set_job(db, job, status="failed", finished_at=utcnow())
    assert client.delete(f"/v1/jobs/{job}", headers=alice.headers).status_code == 204


def test_a_model_in_use_is_refused_with_the_jobs_then_deleted_keeping_its_finished_jobs(
    client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    done = succeeded_audit(client, db, alice, alice_model)
    queued = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]

    r = client.delete(f"/v1/models/{alice_model}", headers=alice.headers)
    assert r.status_code == 409, r.text
    assert r.json()["jobs"] == [{"id": queued, "kind": "audit", "status": "queued"}]
    assert queued in r.json()["detail"] and done not in r.json()["detail"]
    assert client.get(f"/v1/models/{alice_model}", headers=alice.headers).status_code == 200

    assert client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers).status_code == 200
    assert client.delete(f"/v1/models/{alice_model}", headers=alice.headers).status_code == 204
    assert client.get(f"/v1/models/{alice_model}", headers=alice.headers).status_code == 404
    kept = client.get(f"/v1/audits/{done}", headers=alice.headers).json()
    assert kept["status"] == "succeeded" and kept["model_id"] is None
    assert audit_actions(db, alice_model) == ["model.register", "model.delete"]


def test_a_dataset_in_use_is_refused_then_deleted_with_its_file_unless_another_holds_the_same_bytes(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    first, twin = upload(client, alice, "a.jsonl"), upload(client, alice, "b.jsonl")  # same bytes, one file
    stored = Path(app.state.settings.artifact_dir) / db.get(Dataset, uuid.UUID(first["id"])).path
    link = stored.with_name(f"{stored.name}.jsonl")  # as the worker links it
    link.symlink_to(stored.name)
    body = {"model_id": alice_model, "safety_dataset_id": first["id"]}
    job = client.post("/v1/audits", json=body, headers=alice.headers).json()["id"]

    r = client.delete(f"/v1/datasets/{first['id']}", headers=alice.headers)
    assert r.status_code == 409 and r.json()["jobs"][0]["id"] == job
    set_job(db, job, status="succeeded", finished_at=utcnow())

    assert client.delete(f"/v1/datasets/{first['id']}", headers=alice.headers).status_code == 204
    assert stored.is_file()  # the twin still needs it
    assert client.delete(f"/v1/datasets/{twin['id']}", headers=alice.headers).status_code == 204
    assert not stored.exists() and not link.is_symlink()
    assert client.get(f"/v1/datasets/{first['id']}", headers=alice.headers).status_code == 404
    assert audit_actions(db, twin["id"]) == ["dataset.upload", "dataset.delete"]


def test_an_audit_an_active_evaluation_uses_is_not_deleted(
    client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    audit = succeeded_audit(client, db, alice, alice_model)
    body = {"model_id": alice_model, "audit_id": audit, "ablate": "SCU"}
    evaluation = client.post("/v1/evaluations", json=body, headers=alice.headers)
    assert evaluation.status_code == 202, evaluation.text
    r = client.delete(f"/v1/audits/{audit}", headers=alice.headers)
    assert r.status_code == 409
    assert r.json()["jobs"] == [{"id": evaluation.json()["id"], "kind": "evaluation", "status": "queued"}]


def test_other_tenants_get_404_and_the_kind_must_match(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    audit = succeeded_audit(client, db, alice, alice_model)
    dataset = upload(client, alice, "a.jsonl")["id"]
    for path in (f"/v1/audits/{audit}", f"/v1/jobs/{audit}", f"/v1/models/{alice_model}", f"/v1/datasets/{dataset}"):
        assert client.delete(path, headers=bob.headers).status_code == 404, path
    assert client.delete(f"/v1/evaluations/{audit}", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/audits/{audit}", headers=alice.headers).status_code == 200


def test_retention_is_set_read_and_audited(client: TestClient, db: Session, alice: Tenant_, bob: Tenant_):
    assert client.get("/v1/retention", headers=alice.headers).json() == {"retention_days": None}
    r = client.put("/v1/retention", json={"retention_days": 30}, headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"retention_days": 30}
    assert client.get("/v1/retention", headers=alice.headers).json() == {"retention_days": 30}
    assert client.get("/v1/retention", headers=bob.headers).json() == {"retention_days": None}
    r = client.put("/v1/retention", json={"retention_days": 0}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.retention_days"
    assert client.put("/v1/retention", json={"retention_days": None}, headers=alice.headers).json() == {
        "retention_days": None
    }
    db.expire_all()
    details = db.scalars(
        sa.select(AuditLogEntry.details)
        .where(AuditLogEntry.tenant_id == alice.id, AuditLogEntry.action == "retention.set")
        .order_by(AuditLogEntry.created_at)
    ).all()
    assert details == [{"retention_days": 30, "before": None}, {"retention_days": None, "before": 30}]


def test_the_sweep_deletes_finished_jobs_past_their_tenants_retention_with_artifacts(
    app: FastAPI,
    client: TestClient,
    db: Session,
    session_factory: sessionmaker[Session],
    alice: Tenant_,
    bob: Tenant_,
    alice_model: str,
):
    now = utcnow()
    old, recent, used = (succeeded_audit(client, db, alice, alice_model) for _ in range(3))
    failed_old = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    set_job(db, failed_old, status="failed", finished_at=now - timedelta(days=30))
    for job, age in ((old, 10), (recent, 1), (used, 10)):
        set_job(db, job, finished_at=now - timedelta(days=age))
    db.add(Score(job_id=uuid.UUID(old), protocol_hash="h", metrics={}))
    db.commit()
    # An evaluation still queued uses the old audit "used": kept until it ends.
    evaluation = client.post(
        "/v1/evaluations", json={"model_id": alice_model, "audit_id": used, "ablate": "SCU"}, headers=alice.headers
    ).json()["id"]
    set_job(db, evaluation, created_at=now - timedelta(days=20))  # old, but active: never swept
    folders = {job: artifacts_of(app, alice, job) for job in (old, recent, failed_old, used)}
    bob_model = client.post("/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=bob.headers)
    bob_job = succeeded_audit(client, db, bob, bob_model.json()["id"])
    set_job(db, bob_job, finished_at=now - timedelta(days=400))  # bob has no retention: kept
    set_retention(db, "alice", 7)
    db.commit()

    for session in session_scope(session_factory):
        assert apply_retention(session, app.state.settings, now=now) == 2
    db.expire_all()
    remaining = {str(j) for j in db.scalars(sa.select(Job.id))}
    assert {old, failed_old} & remaining == set()
    assert {recent, used, evaluation, bob_job} <= remaining
    assert not folders[old].exists() and not folders[failed_old].exists()
    assert folders[recent].exists() and folders[used].exists()
    assert db.scalar(sa.select(sa.func.count()).select_from(Score).where(Score.job_id == uuid.UUID(old))) == 0
    expired = db.scalars(
        sa.select(AuditLogEntry).where(AuditLogEntry.action == "job.expire").order_by(AuditLogEntry.created_at)
    ).all()
    assert {str(e.resource_id) for e in expired} == {old, failed_old}
    assert all(e.key_prefix == "system" and e.details["retention_days"] == 7 for e in expired)

    set_job(db, evaluation, status="cancelled", finished_at=now)
    for session in session_scope(session_factory):
        assert apply_retention(session, app.state.settings, now=now) == 1  # "used" is free now
    assert not folders[used].exists()


def test_a_rolled_back_delete_keeps_the_files(
    app: FastAPI, db: Session, session_factory: sessionmaker[Session], client: TestClient, alice: Tenant_, alice_model
):
    audit = succeeded_audit(client, db, alice, alice_model)
    set_job(db, audit, finished_at=utcnow() - timedelta(days=9))
    folder = artifacts_of(app, alice, audit)
    set_retention(db, "alice", 7)
    db.commit()
    try:
        for session in session_scope(session_factory):
            assert apply_retention(session, app.state.settings) == 1
            raise RuntimeError("the commit never happens")
    except RuntimeError:
        pass
    assert folder.exists()
    db.expire_all()
    assert db.get(Job, uuid.UUID(audit)) is not None

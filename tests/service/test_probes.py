"""Probes over the API: creation rules, the queue, the result and the direction download."""

from __future__ import annotations

import json
import uuid

import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import ProbeResult
from tests.service.conftest import Tenant_, register_model, set_job, succeeded_audit


def test_probe_is_queued_on_the_gpu_queue_with_its_settings(
    client: TestClient, alice: Tenant_, alice_model: str, redis_client: redis.Redis
):
    r = client.post("/v1/probes", json={"model_id": alice_model, "ks": [2, 4], "pool": "mean"}, headers=alice.headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "probe" and job["params"]["ks"] == [2, 4] and job["params"]["pool"] == "mean"
    assert r.headers["location"] == f"/v1/probes/{job['id']}"
    assert client.get(f"/v1/probes/{job['id']}", headers=alice.headers).json()["id"] == job["id"]
    assert [j["id"] for j in client.get("/v1/probes", headers=alice.headers).json()["items"]] == [job["id"]]
    tasks = [json.loads(m)["headers"]["task"] for m in redis_client.lrange("gpu", 0, -1)]
    assert tasks == ["ssah.probe"]


def test_probe_rules(client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str):
    for body in ({"ks": [4, 2]}, {"ks": []}, {"ks": [0]}, {"pool": "max"}, {"calibration": 2}, {"typo": 1}):
        r = client.post("/v1/probes", json={"model_id": alice_model, **body}, headers=alice.headers)
        assert r.status_code == 422, (body, r.text)
    r = client.post("/v1/probes", json={"model_id": alice_model, "audit_id": str(uuid.uuid4())}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.audit_id"
    other_model = register_model(db, alice, name="other")
    audit = succeeded_audit(client, db, alice, other_model)
    r = client.post("/v1/probes", json={"model_id": alice_model, "audit_id": audit}, headers=alice.headers)
    assert r.status_code == 422 and "another model" in r.json()["errors"][0]["msg"]
    r = client.post("/v1/probes", json={"model_id": other_model, "audit_id": audit}, headers=alice.headers)
    assert r.status_code == 202, r.text
    assert client.post("/v1/probes", json={"model_id": alice_model}, headers=bob.headers).status_code == 422


def test_probe_result_409_until_succeeded_then_served_to_its_tenant_only(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    job = client.post("/v1/probes", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    assert client.get(f"/v1/probes/{job}/result", headers=alice.headers).status_code == 409
    uri = f"{alice.id}/jobs/{job}/probe.zip"
    (app.state.settings.artifact_dir / uri).parent.mkdir(parents=True)
    (app.state.settings.artifact_dir / uri).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    set_job(db, job, status="succeeded", progress=1.0)
    summary = {"distances": {"refusal": {"2": [0.1, 0.2]}}, "direction": {"layer": 1}}
    db.add(ProbeResult(job_id=uuid.UUID(job), summary=summary, artifact_uri=uri))
    db.commit()
    r = client.get(f"/v1/probes/{job}/result", headers=alice.headers)
    assert r.status_code == 200 and r.json()["summary"] == summary
    r = client.get(f"/v1/probes/{job}/direction", headers=alice.headers)
    assert r.status_code == 200 and r.content.startswith(b"PK")
    assert client.get(f"/v1/probes/{job}/result", headers=bob.headers).status_code == 404
    assert client.get(f"/v1/probes/{job}/direction", headers=bob.headers).status_code == 404

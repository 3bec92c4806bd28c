"""Audits and the job lifecycle over HTTP: create, poll with ETags, list, filter, cancel."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import Job
from tests.service.conftest import Tenant_, register_model, set_job


def test_create_audit_answers_202_with_location_and_enqueues_on_gpu(
    client: TestClient, alice: Tenant_, alice_model: str, redis_client: redis.Redis, db: Session
):
    r = client.post(
        "/v1/audits", json={"model_id": alice_model, "method": "wanda", "cuts": {"scu": 0.02}}, headers=alice.headers
    )
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/v1/audits/{job['id']}"
    assert job["kind"] == "audit" and job["status"] == "queued" and job["progress"] == 0
    assert job["params"]["cuts"] == {"ru": 0.1, "scu": 0.02, "ucu": 0.1}
    assert job["params"]["samples"] == 128 and job["params"]["method"] == "wanda"
    messages = redis_client.lrange("gpu", 0, -1)
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == "ssah.audit"
    assert message["headers"]["argsrepr"] == repr([job["id"]])
    assert redis_client.llen("cpu") == 0
    assert db.get(Job, uuid.UUID(job["id"])).enqueued_at is not None


def test_validation_error_is_problem_json_naming_the_field(client: TestClient, alice: Tenant_, alice_model: str):
    r = client.post(
        "/v1/audits", json={"model_id": alice_model, "cuts": {"scu": 1.5}, "method": "magic"}, headers=alice.headers
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 422 and body["instance"] == "/v1/audits" and body["title"]
    assert {e["loc"] for e in body["errors"]} == {"body.cuts.scu", "body.method"}
    assert "body.cuts.scu" in body["detail"]


def test_audit_of_unknown_or_foreign_model_names_model_id(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_
):
    bobs_model = register_model(db, bob)
    for model_id in (str(uuid.uuid4()), bobs_model):
        r = client.post("/v1/audits", json={"model_id": model_id}, headers=alice.headers)
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == "body.model_id"


def test_unknown_dataset_is_refused(client: TestClient, alice: Tenant_, alice_model: str):
    r = client.post(
        "/v1/audits", json={"model_id": alice_model, "safety_dataset_id": str(uuid.uuid4())}, headers=alice.headers
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "body.safety_dataset_id"


def test_etag_gives_304_until_the_job_changes(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    job_id = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    first = client.get(f"/v1/audits/{job_id}", headers=alice.headers)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('W/"') and job_id in etag
    unchanged = client.get(f"/v1/audits/{job_id}", headers={**alice.headers, "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    set_job(db, job_id, status="running", progress=0.25, progress_message="scoring safety set")
    changed = client.get(f"/v1/audits/{job_id}", headers={**alice.headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["status"] == "running" and changed.json()["progress"] == 0.25
    assert changed.json()["version"] > first.json()["version"]
    # The generic collection serves the same job with the same ETag.
    same = client.get(f"/v1/jobs/{job_id}", headers={**alice.headers, "If-None-Match": changed.headers["etag"]})
    assert same.status_code == 304


def test_get_job_of_wrong_kind_or_unknown_id_is_404(client: TestClient, alice: Tenant_, alice_model: str):
    job_id = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    assert client.get(f"/v1/evaluations/{job_id}", headers=alice.headers).status_code == 404
    r = client.get(f"/v1/audits/{uuid.uuid4()}", headers=alice.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/audits/not-a-uuid", headers=alice.headers).json()["errors"][0]["loc"] == "path.audit_id"


def test_list_paginates_with_total_and_next(client: TestClient, alice: Tenant_, alice_model: str):
    ids = [
        client.post("/v1/audits", json={"model_id": alice_model, "samples": n + 1}, headers=alice.headers).json()["id"]
        for n in range(5)
    ]
    page1 = client.get("/v1/audits", params={"limit": 2}, headers=alice.headers).json()
    assert page1["total"] == 5 and page1["limit"] == 2 and page1["offset"] == 0
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]  # newest first
    assert page1["next"].endswith("/v1/audits?limit=2&offset=2")
    page3 = client.get("/v1/audits", params={"limit": 2, "offset": 4}, headers=alice.headers).json()
    assert [j["id"] for j in page3["items"]] == [ids[0]] and page3["next"] is None
    everything = client.get("/v1/jobs", params={"limit": 200}, headers=alice.headers).json()
    assert sorted(j["id"] for j in everything["items"]) == sorted(ids)


def test_list_filters_by_status_model_and_time(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    other_model = register_model(db, alice, name="other")
    a = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()
    b = client.post("/v1/audits", json={"model_id": other_model}, headers=alice.headers).json()
    set_job(db, b["id"], status="running")

    def ids(**params: str) -> list[str]:
        r = client.get("/v1/audits", params=params, headers=alice.headers)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["items"]]

    assert ids(status="running") == [b["id"]]
    assert ids(status="queued") == [a["id"]]
    assert ids(model_id=alice_model) == [a["id"]]
    created_b = datetime.fromisoformat(b["created_at"])
    assert ids(created_before=b["created_at"]) == [a["id"]]
    assert ids(created_after=a["created_at"]) == [b["id"]]
    assert ids(created_after=(created_b + timedelta(hours=1)).isoformat()) == []
    assert ids(created_after=datetime(2000, 1, 1, tzinfo=timezone.utc).isoformat()) == [b["id"], a["id"]]
    assert client.get("/v1/audits", params={"status": "lost"}, headers=alice.headers).status_code == 422


def test_cancel_rules(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    queued = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()
    r = client.post(f"/v1/audits/{queued['id']}/cancel", headers=alice.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None

    running = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()
    set_job(db, running["id"], status="running")
    r = client.post(f"/v1/jobs/{running['id']}/cancel", headers=alice.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True

    for terminal in ("succeeded", "failed"):
        job = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()
        set_job(db, job["id"], status=terminal)
        r = client.post(f"/v1/audits/{job['id']}/cancel", headers=alice.headers)
        assert r.status_code == 409 and terminal in r.json()["detail"]
    r = client.post(f"/v1/audits/{queued['id']}/cancel", headers=alice.headers)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert client.post(f"/v1/jobs/{uuid.uuid4()}/cancel", headers=alice.headers).status_code == 404

"""API keys, tenant isolation and idempotent retries."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service import admin
from service.admin import KeyNotFound, revoke_api_key
from ssah import cli
from tests.service.conftest import Tenant_


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer ssah_nope"}, {"Authorization": "Basic abc"}, {"X-API-Key": "ssah_wrong"}]
)
def test_missing_or_unknown_key_is_401_problem(client: TestClient, alice: Tenant_, headers: dict[str, str]):
    r = client.get("/v1/jobs", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_x_api_key_header_works(client: TestClient, alice: Tenant_):
    assert client.get("/v1/jobs", headers={"X-API-Key": alice.key}).status_code == 200


def test_revoked_key_is_refused(client: TestClient, db: Session, alice: Tenant_):
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    revoke_api_key(db, alice.key[:13])
    db.commit()
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 401
    with pytest.raises(KeyNotFound):
        revoke_api_key(db, alice.key[:13])


def test_key_is_stored_hashed_only(db: Session, alice: Tenant_):
    from service.models import ApiKey

    row = db.query(ApiKey).one()
    assert row.prefix == alice.key[:13] and alice.key not in (row.key_hash, row.prefix)
    assert len(row.key_hash) == 64


def test_tenants_never_see_each_others_jobs(client: TestClient, alice: Tenant_, bob: Tenant_, alice_model: str):
    job = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    for path in (f"/v1/audits/{job}", f"/v1/jobs/{job}", f"/v1/audits/{job}/unit-map"):
        r = client.get(path, headers=bob.headers)
        assert r.status_code == 404, path
        assert job in r.json()["detail"] or "no audit" in r.json()["detail"]
    assert client.post(f"/v1/jobs/{job}/cancel", headers=bob.headers).status_code == 404
    assert client.get("/v1/jobs", headers=bob.headers).json()["total"] == 0
    assert client.get("/v1/audits", headers=alice.headers).json()["total"] == 1
    assert client.get(f"/v1/jobs/{job}", headers=alice.headers).json()["status"] == "queued"  # untouched


def test_same_idempotency_key_replays_the_same_job(
    client: TestClient, alice: Tenant_, alice_model: str, redis_client: redis.Redis
):
    headers = {**alice.headers, "Idempotency-Key": "run-42"}
    body = {"model_id": alice_model, "samples": 64}
    first = client.post("/v1/audits", json=body, headers=headers)
    again = client.post("/v1/audits", json=dict(reversed(body.items())), headers=headers)  # key order is irrelevant
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert client.get("/v1/audits", headers=alice.headers).json()["total"] == 1
    assert redis_client.llen("gpu") == 1  # the retry enqueued nothing


def test_idempotency_key_with_a_different_body_is_refused(
    client: TestClient, alice: Tenant_, bob: Tenant_, alice_model: str
):
    headers = {**alice.headers, "Idempotency-Key": "k1"}
    assert client.post("/v1/audits", json={"model_id": alice_model}, headers=headers).status_code == 202
    r = client.post("/v1/audits", json={"model_id": alice_model, "samples": 3}, headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "header.Idempotency-Key" and "k1" in r.json()["detail"]
    r = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=headers)  # another route, same key
    assert r.status_code == 422
    # Keys are per tenant: Bob's "k1" is his own.
    r = client.post("/v1/models", json={"name": "m", "source": "x"}, headers={**bob.headers, "Idempotency-Key": "k1"})
    assert r.status_code == 201


def test_idempotent_upload_and_cancel(client: TestClient, alice: Tenant_, alice_model: str):
    headers = {**alice.headers, "Idempotency-Key": "upload-1"}
    first = client.post("/v1/datasets", files={"file": ("a.txt", b"a\n")}, headers=headers)
    again = client.post("/v1/datasets", files={"file": ("a.txt", b"a\n")}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    other = client.post("/v1/datasets", files={"file": ("a.txt", b"b\n")}, headers=headers)
    assert other.status_code == 422
    job = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    cancel = {**alice.headers, "Idempotency-Key": "cancel-1"}
    assert client.post(f"/v1/audits/{job}/cancel", headers=cancel).status_code == 200
    replay = client.post(f"/v1/audits/{job}/cancel", headers=cancel)
    assert replay.status_code == 200 and replay.json()["status"] == "cancelled"  # not 409: a replay


def test_admin_cli_creates_lists_and_revokes(
    session_factory: sessionmaker[Session],
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    monkeypatch.setattr(admin, "get_sessionmaker", lambda: session_factory)
    assert cli.main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ssah_") and len(key) > 40
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key[:13] in listed and "acme" in listed and key not in listed
    assert cli.main(["keys", "revoke", key[:13]]) == 0
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert cli.main(["keys", "revoke", key[:13]]) == 1

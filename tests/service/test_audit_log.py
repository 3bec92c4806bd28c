"""The audit log: who (tenant, key) registered, uploaded, submitted and cancelled what, when, with which request."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.admin import create_api_key
from tests.service.conftest import Tenant_


def entries(client: TestClient, tenant: Tenant_, query: str = "") -> list[dict]:
    r = client.get(f"/v1/audit-log{query}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_every_state_change_is_logged_with_key_and_request_id(client: TestClient, alice: Tenant_):
    served: list[str] = []

    def post(path: str, request_id: str, **kwargs):
        r = client.post(path, headers={**alice.headers, "X-Request-ID": request_id}, **kwargs)
        assert r.status_code in (200, 201, 202), r.text
        served.append(r.headers["x-request-id"])
        return r.json()["id"]

    model = post("/v1/models", "req-model", json={"name": "smol", "source": "builtin:smollm2"})
    dataset = post("/v1/datasets", "req-data", files={"file": ("p.txt", b"one\ntwo\n")})
    audit = post("/v1/audits", "req-audit", json={"model_id": model, "safety_dataset_id": dataset})
    post(f"/v1/audits/{audit}/cancel", "req-cancel")

    log = entries(client, alice)
    assert [e["request_id"] for e in log] == served[::-1]  # the server's ids, as its answers said
    assert [(e["action"], e["resource_type"], e["resource_id"], e["client_request_id"]) for e in log] == [
        ("job.cancel", "audit", audit, "req-cancel"),  # newest first
        ("job.submit", "audit", audit, "req-audit"),
        ("dataset.upload", "dataset", dataset, "req-data"),
        ("model.register", "model", model, "req-model"),
    ]
    assert {e["key_prefix"] for e in log} == {alice.key[:13]} and len({e["key_id"] for e in log}) == 1
    assert log[3]["details"] == {"name": "smol", "source": "builtin:smollm2"}
    assert log[2]["details"]["rows"] == 2 and len(log[2]["details"]["sha256"]) == 64
    assert log[1]["details"] == {"kind": "audit", "model_id": model}
    assert log[0]["details"] == {"kind": "audit", "status": "cancelled"}
    assert log[0]["created_at"] >= log[3]["created_at"]


def test_reads_refusals_and_idempotent_replays_add_nothing(client: TestClient, alice: Tenant_, alice_model: str):
    assert len(entries(client, alice)) == 1  # the fixture's registration
    client.get("/v1/jobs", headers=alice.headers)
    assert (
        client.post("/v1/models", json={"name": "x", "source": "http://evil/m"}, headers=alice.headers).status_code
        == 422
    )
    headers = {**alice.headers, "Idempotency-Key": "k"}
    first = client.post("/v1/audits", json={"model_id": alice_model}, headers=headers)
    replay = client.post("/v1/audits", json={"model_id": alice_model}, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json()["id"] == first.json()["id"]
    assert [e["action"] for e in entries(client, alice)] == ["job.submit", "model.register"]


def test_the_log_is_tenant_scoped_names_the_key_and_is_paginated(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_
):
    second_key = create_api_key(db, "alice")  # a second key of the same tenant
    db.commit()
    for i in range(3):
        client.post("/v1/models", json={"name": f"m{i}", "source": "builtin:smollm2"}, headers=alice.headers)
    client.post(
        "/v1/models",
        json={"name": "m3", "source": "builtin:smollm2"},
        headers={"Authorization": f"Bearer {second_key}"},
    )
    client.post("/v1/models", json={"name": "b", "source": "builtin:smollm2"}, headers=bob.headers)

    assert [e["details"]["name"] for e in entries(client, bob)] == ["b"]
    page = client.get("/v1/audit-log?limit=3", headers=alice.headers).json()
    assert (page["total"], len(page["items"]), page["limit"], page["offset"]) == (4, 3, 3, 0)
    assert page["items"][0]["key_prefix"] == second_key[:13] and page["items"][1]["key_prefix"] == alice.key[:13]
    rest = client.get(page["next"].replace("http://testserver", ""), headers=alice.headers).json()
    assert [e["details"]["name"] for e in rest["items"]] == ["m0"] and rest["next"] is None
    assert entries(client, alice, "?action=job.submit") == []
    model_id = page["items"][0]["resource_id"]
    assert [e["resource_id"] for e in entries(client, alice, f"?resource_id={model_id}")] == [model_id]
    assert client.get("/v1/audit-log?action=nope", headers=alice.headers).status_code == 422
    assert client.get("/v1/audit-log").status_code == 401


def test_the_logged_request_id_is_the_one_the_response_reports(
    make_app: Callable[..., FastAPI], alice: Tenant_, redis_client: object
):
    with TestClient(make_app()) as client:
        generated = client.post("/v1/models", json={"name": "a", "source": "builtin:smollm2"}, headers=alice.headers)
        long = client.post(
            "/v1/models",
            json={"name": "b", "source": "builtin:smollm2"},
            headers={**alice.headers, "X-Request-ID": "r" * 500},
        )
        assert [e["request_id"] for e in entries(client, alice)] == [
            long.headers["x-request-id"],
            generated.headers["x-request-id"],
        ]
        assert [e["client_request_id"] for e in entries(client, alice)] == ["r" * 100, None]


def test_a_client_cannot_choose_the_logged_request_id(client: TestClient, alice: Tenant_):
    # The attack: reuse another request's id (or forge one) so the audit log points at the wrong request.
    first = client.post("/v1/models", json={"name": "a", "source": "builtin:smollm2"}, headers=alice.headers)
    forged = first.headers["x-request-id"]
    second = client.post(
        "/v1/models", json={"name": "b", "source": "builtin:smollm2"}, headers={**alice.headers, "X-Request-ID": forged}
    )
    assert second.headers["x-request-id"] != forged
    newest = entries(client, alice)[0]
    assert (newest["request_id"], newest["client_request_id"]) == (second.headers["x-request-id"], forged)
    assert len({e["request_id"] for e in entries(client, alice)}) == 2

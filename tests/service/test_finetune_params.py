"""POST /v1/finetunes takes the freeze rule, the paper schedule and refusal tracking, and stores them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import Tenant_


def _dataset(client: TestClient, alice: Tenant_) -> str:
    return client.post(
        "/v1/datasets", files={"file": ("train.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]


def test_tracking_and_schedule_fields_are_stored_with_the_job(client: TestClient, alice: Tenant_, alice_model: str):
    body = {
        "model_id": alice_model,
        "dataset_id": _dataset(client, alice),
        "track_refusal": True,
        "track_every": 5,
        "stop_if_refusal_below": -1.5,
        "paper_schedule": True,
        "freeze_rule": "rows",
    }
    r = client.post("/v1/finetunes", json=body, headers=alice.headers)
    assert r.status_code == 202, r.text
    params = r.json()["params"]
    assert (params["track_refusal"], params["track_every"], params["stop_if_refusal_below"]) == (True, 5, -1.5)
    assert (params["paper_schedule"], params["freeze_rule"]) == (True, "rows")
    defaults = client.post(
        "/v1/finetunes", json={"model_id": alice_model, "dataset_id": body["dataset_id"]}, headers=alice.headers
    ).json()["params"]
    assert (defaults["freeze_rule"], defaults["track_refusal"]) == ("function", False)


def test_a_stop_rule_without_tracking_is_refused(client: TestClient, alice: Tenant_, alice_model: str):
    body = {"model_id": alice_model, "dataset_id": _dataset(client, alice), "stop_if_refusal_below": 0.0}
    r = client.post("/v1/finetunes", json=body, headers=alice.headers)
    assert r.status_code == 422 and "needs track_refusal" in r.json()["detail"]

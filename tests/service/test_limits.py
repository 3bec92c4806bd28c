"""Deployment limits: each refusal is a 4xx problem+json naming the limit (its setting) and its value."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.service.conftest import Tenant_, set_job


def assert_limit(r, status: int, limit: str, value: int, loc: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["status"], body["limit"], body["limit_value"]) == (status, limit, value)
    assert limit in body["detail"]
    if loc is not None:
        assert body["errors"][0]["loc"] == loc
    return body


def upload(client: TestClient, tenant: Tenant_, text: str, name: str = "prompts.txt"):
    return client.post("/v1/datasets", files={"file": (name, text.encode())}, headers=tenant.headers)


def test_upload_size_and_row_limits_answer_413_naming_the_limit(
    make_app: Callable[..., FastAPI], alice: Tenant_, redis_client: object
):
    with TestClient(make_app(max_upload_bytes=64, max_dataset_rows=3)) as client:
        assert_limit(upload(client, alice, "a prompt\n" * 10), 413, "max_upload_bytes", 64)
        assert_limit(upload(client, alice, "one\ntwo\nthree\nfour\n"), 413, "max_dataset_rows", 3)
        assert upload(client, alice, "one\ntwo\nthree\n").status_code == 201  # at the limit is fine


@pytest.mark.parametrize(
    ("path", "field", "limit"),
    [
        ("/v1/audits", "max_length", "max_sequence_length"),
        ("/v1/evaluations", "max_new_tokens", "max_sequence_length"),
        ("/v1/audits", "samples", "max_samples_per_request"),
        ("/v1/evaluations", "samples", "max_samples_per_request"),
    ],
)
def test_sequence_length_and_samples_past_the_limit_are_422(
    make_app: Callable[..., FastAPI],
    alice: Tenant_,
    alice_model: str,
    redis_client: object,
    path: str,
    field: str,
    limit: str,
):
    # Limits above the request defaults (max_length 512, samples 128): only the named field trips them.
    with TestClient(make_app(max_sequence_length=1024, max_samples_per_request=200)) as client:
        value = 1024 if limit == "max_sequence_length" else 200
        over = client.post(path, json={"model_id": alice_model, field: value + 1}, headers=alice.headers)
        body = assert_limit(over, 422, limit, value, loc=f"body.{field}")
        assert body["type"] == "urn:ssah:problem:limit-exceeded" and f"{field}={value + 1}" in body["detail"]
        assert client.post(path, json={"model_id": alice_model, field: value}, headers=alice.headers).status_code == 202
        assert client.get("/v1/jobs", headers=alice.headers).json()["total"] == 1  # the refused one left nothing


def test_finetune_max_length_is_limited(
    make_app: Callable[..., FastAPI], alice: Tenant_, alice_model: str, redis_client: object
):
    with TestClient(make_app(max_sequence_length=1024)) as client:
        dataset = upload(client, alice, "one\ntwo\n").json()["id"]
        body = {"model_id": alice_model, "dataset_id": dataset, "max_length": 1025}
        assert_limit(
            client.post("/v1/finetunes", json=body, headers=alice.headers),
            422,
            "max_sequence_length",
            1024,
            loc="body.max_length",
        )


def test_concurrent_jobs_per_tenant_counts_queued_and_running(
    make_app: Callable[..., FastAPI], db: Session, alice: Tenant_, bob: Tenant_, alice_model: str, redis_client: object
):
    with TestClient(make_app(max_concurrent_jobs_per_tenant=2)) as client:

        def submit(tenant: Tenant_, model: str):
            return client.post("/v1/audits", json={"model_id": model}, headers=tenant.headers)

        first, second = submit(alice, alice_model), submit(alice, alice_model)
        assert (first.status_code, second.status_code) == (202, 202)
        set_job(db, first.json()["id"], status="running")  # running counts as much as queued
        refused = submit(alice, alice_model)
        body = assert_limit(refused, 429, "max_concurrent_jobs_per_tenant", 2)
        assert "2 jobs queued or running" in body["detail"] and refused.headers["retry-after"] == "30"
        assert client.get("/v1/jobs", headers=alice.headers).json()["total"] == 2

        bob_model = client.post(
            "/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=bob.headers
        ).json()["id"]
        assert submit(bob, bob_model).status_code == 202  # another tenant has its own budget

        assert client.post(f"/v1/jobs/{second.json()['id']}/cancel", headers=alice.headers).status_code == 200
        assert submit(alice, alice_model).status_code == 202  # a cancelled job frees its slot
        set_job(db, first.json()["id"], status="succeeded")
        assert submit(alice, alice_model).status_code == 202  # so does a finished one
        assert submit(alice, alice_model).status_code == 429


def test_concurrency_limit_zero_means_no_limit(
    make_app: Callable[..., FastAPI], alice: Tenant_, alice_model: str, redis_client: object
):
    with TestClient(make_app(max_concurrent_jobs_per_tenant=0)) as client:
        codes = {
            client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).status_code
            for _ in range(3)
        }
        assert codes == {202}

"""Evaluations, fine-tunes, comparisons and unit maps: creation rules and result endpoints."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import Comparison, FinetuneResult, Score
from tests.service.conftest import (
    SUMMARY,
    Tenant_,
    register_model,
    set_job,
    succeeded_audit,
)


def test_evaluation_accepts_both_class_spellings(
    client: TestClient, db: Session, alice: Tenant_, alice_model: str, redis_client: redis.Redis
):
    audit = succeeded_audit(client, db, alice, alice_model)
    for spelling, canonical in (("ESU", "SCU"), ("SCU", "SCU"), ("EUU", "UCU"), ("RU", "RU")):
        r = client.post(
            "/v1/evaluations",
            json={"model_id": alice_model, "audit_id": audit, "ablate": spelling},
            headers=alice.headers,
        )
        assert r.status_code == 202, r.text
        assert r.json()["params"]["ablate"] == [canonical]
        assert r.headers["location"] == f"/v1/evaluations/{r.json()['id']}"
    tasks = [json.loads(m)["headers"]["task"] for m in redis_client.lrange("gpu", 0, -1)]
    assert tasks.count("ssah.evaluation") == 4
    r = client.post(
        "/v1/evaluations",
        json={
            "model_id": alice_model,
            "audit_id": audit,
            "ablate": ["ESU", "SCU", "RU"],
            "control": "random",
            "seed": 2,
            "compensation": "safety",
            "prompt_format": "no_inst",
        },
        headers=alice.headers,
    )
    assert r.status_code == 202, r.text
    params = r.json()["params"]
    assert (params["ablate"], params["control"], params["seed"]) == (["SCU", "RU"], "random", 2)
    assert (params["compensation"], params["prompt_format"], params["conditions"]) == (
        "safety",
        "no_inst",
        ["system", "no_system"],
    )


def test_evaluation_rules(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    r = client.post("/v1/evaluations", json={"model_id": alice_model, "ablate": "SCU"}, headers=alice.headers)
    assert r.status_code == 422 and "ablate needs audit_id" in r.json()["detail"]
    r = client.post("/v1/evaluations", json={"model_id": alice_model, "ablate": "XYZ"}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"].startswith("body.ablate")
    for body, message in (
        ({"control": "random"}, "control needs ablate"),
        ({"conditions": ["no_system", "suffix"]}, "suffixes_dataset_id"),
        ({"conditions": ["system", "system"]}, "conditions repeat"),
        ({"prompt_format": "inst"}, "prompt_format"),
        ({"compensation": "mean"}, "compensation"),
    ):
        r = client.post("/v1/evaluations", json={"model_id": alice_model, **body}, headers=alice.headers)
        assert r.status_code == 422 and message in r.text, (body, r.text)
    queued_audit = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    r = client.post(
        "/v1/evaluations",
        json={"model_id": alice_model, "audit_id": queued_audit, "ablate": "CU"},
        headers=alice.headers,
    )
    assert r.status_code == 409 and r.json()["job_status"] == "queued"


def test_scores_409_until_succeeded_then_listed(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    job = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    r = client.get(f"/v1/evaluations/{job}/scores", headers=alice.headers)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    set_job(db, job, status="succeeded")
    db.add(Score(job_id=uuid.UUID(job), protocol_hash="a" * 64, metrics={"asr": 0.05, "utility": 0.61}))
    db.commit()
    r = client.get(f"/v1/evaluations/{job}/scores", headers=alice.headers)
    assert r.status_code == 200
    assert [s["metrics"] for s in r.json()] == [{"asr": 0.05, "utility": 0.61}]
    r = client.get(f"/v1/evaluations/{job}/records", headers=alice.headers)
    assert r.status_code == 404 and "records" in r.json()["detail"]  # this score stored no records
    r = client.get(f"/v1/evaluations/{job}/result", headers=alice.headers)
    assert r.status_code == 404 and "result file" in r.json()["detail"]  # ... and no result file


def test_evaluation_result_download(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    job = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    assert client.get(f"/v1/evaluations/{job}/result", headers=alice.headers).status_code == 409
    uri = f"{alice.id}/jobs/{job}/evaluation.json"
    (app.state.settings.artifact_dir / uri).parent.mkdir(parents=True)
    (app.state.settings.artifact_dir / uri).write_text('{"records": [{"prompt": "p", "refused": true}]}')
    set_job(db, job, status="succeeded")
    db.add(Score(job_id=uuid.UUID(job), protocol_hash="a" * 64, metrics={"asr": 0.0}, records_uri=uri))
    db.commit()
    r = client.get(f"/v1/evaluations/{job}/result", headers=alice.headers)
    assert r.status_code == 200 and r.json()["records"] == [{"prompt": "p", "refused": True}]
    assert client.get(f"/v1/evaluations/{job}/result", headers=bob.headers).status_code == 404
    # stored before the records table: the records API says where the whole result is
    r = client.get(f"/v1/evaluations/{job}/records", headers=alice.headers)
    assert r.status_code == 404 and f"/v1/evaluations/{job}/result" in r.json()["detail"]


def test_finetune_modes_and_result(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    data = client.post(
        "/v1/datasets", files={"file": ("train.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    r = client.post(
        "/v1/finetunes", json={"model_id": alice_model, "dataset_id": data, "mode": "freeze"}, headers=alice.headers
    )
    assert r.status_code == 422 and "needs audit_id" in r.json()["detail"]
    audit = succeeded_audit(client, db, alice, alice_model)
    r = client.post(
        "/v1/finetunes",
        json={
            "model_id": alice_model,
            "dataset_id": data,
            "mode": "budget",
            "audit_id": audit,
            "epochs": 2,
            "lr": 1e-4,
        },
        headers=alice.headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert client.get(f"/v1/finetunes/{job}/result", headers=alice.headers).status_code == 409
    set_job(db, job, status="succeeded")
    assert client.get(f"/v1/finetunes/{job}/result", headers=alice.headers).status_code == 404
    db.add(
        FinetuneResult(
            job_id=uuid.UUID(job), loss_curve={"step": [1, 2], "loss": [2.0, 1.5]}, output_model_uri="runs/ft/model"
        )
    )
    db.commit()
    r = client.get(f"/v1/finetunes/{job}/result", headers=alice.headers)
    assert r.status_code == 200 and r.json()["loss_curve"]["loss"] == [2.0, 1.5]


def test_finetuned_model_download_is_a_tar_of_the_model_directory(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str, tmp_path: Path
):
    data = client.post(
        "/v1/datasets", files={"file": ("train.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    job = client.post(
        "/v1/finetunes", json={"model_id": alice_model, "dataset_id": data}, headers=alice.headers
    ).json()["id"]
    assert client.get(f"/v1/finetunes/{job}/model", headers=alice.headers).status_code == 409
    model = app.state.settings.artifact_dir / str(alice.id) / "jobs" / job / "finetune" / "model"
    (model / "sub").mkdir(parents=True)
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": bytes(range(256)) * 4099,
        "sub/tokenizer.json": b"{}",
    }
    for name, content in files.items():
        (model / name).write_bytes(content)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (model / "link.txt").symlink_to(secret)  # never followed out of the tenant's folder
    set_job(db, job, status="succeeded")
    db.add(FinetuneResult(job_id=uuid.UUID(job), loss_curve={}, output_model_uri=str(model)))
    db.commit()

    r = client.get(f"/v1/finetunes/{job}/model", headers=alice.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == {f"model/{name}": content for name, content in files.items()}
    assert client.get(f"/v1/finetunes/{job}/model", headers=bob.headers).status_code == 404


def test_comparison_needs_two_succeeded_audits_of_the_tenant(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str, redis_client: redis.Redis
):
    before = succeeded_audit(client, db, alice, alice_model)
    after = succeeded_audit(client, db, alice, alice_model)
    bobs = succeeded_audit(client, db, bob, register_model(db, bob))
    r = client.post("/v1/comparisons", json={"before_audit_id": before, "after_audit_id": bobs}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.after_audit_id"
    running = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    set_job(db, running, status="running")
    r = client.post(
        "/v1/comparisons", json={"before_audit_id": running, "after_audit_id": after}, headers=alice.headers
    )
    assert r.status_code == 409
    r = client.post("/v1/comparisons", json={"before_audit_id": before, "after_audit_id": after}, headers=alice.headers)
    assert r.status_code == 202
    job = r.json()["id"]
    assert r.json()["model_id"] == alice_model
    assert [json.loads(m)["headers"]["task"] for m in redis_client.lrange("cpu", 0, -1)] == ["ssah.comparison"]
    assert client.get(f"/v1/comparisons/{job}/result", headers=alice.headers).status_code == 409
    set_job(db, job, status="succeeded")
    db.add(Comparison(job_id=uuid.UUID(job), crosstab={"SCU": {"SCU": 5, "RU": 7}}))
    db.commit()
    r = client.get(f"/v1/comparisons/{job}/result", headers=alice.headers)
    assert r.status_code == 200 and r.json()["crosstab"] == {"SCU": {"SCU": 5, "RU": 7}}


def test_unit_map_summary_layers_and_artifact(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    artifact_dir: Path = app.state.settings.artifact_dir
    uri = f"{alice.id}/audits/unit_map.safetensors"
    (artifact_dir / uri).parent.mkdir(parents=True)
    (artifact_dir / uri).write_bytes(b"\x00unit-map-bytes")
    audit = succeeded_audit(client, db, alice, alice_model, artifact_uri=uri)

    r = client.get(f"/v1/audits/{audit}/unit-map", headers=alice.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["classes"]["SCU"] == SUMMARY["classes"]["SCU"]
    assert body["layer_count"] == 5 and body["artifact_available"] is True

    r = client.get(f"/v1/audits/{audit}/unit-map/layers", params={"limit": 2, "offset": 3}, headers=alice.headers)
    assert r.status_code == 200
    assert [(layer["index"], layer["SCU"]) for layer in r.json()["items"]] == [(3, 3), (4, 4)]
    assert r.json()["total"] == 5 and r.json()["next"] is None

    r = client.get(f"/v1/audits/{audit}/unit-map/artifact", headers=alice.headers)
    assert r.status_code == 200 and r.content == b"\x00unit-map-bytes"
    for path in ("", "/layers", "/artifact"):
        assert client.get(f"/v1/audits/{audit}/unit-map{path}", headers=bob.headers).status_code == 404


def test_unit_map_409_before_success_and_404_for_missing_artifact(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    queued = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    r = client.get(f"/v1/audits/{queued}/unit-map", headers=alice.headers)
    assert r.status_code == 409 and r.json()["type"] == "urn:ssah:problem:job-not-succeeded"
    missing = succeeded_audit(client, db, alice, alice_model, artifact_uri=f"{alice.id}/gone.bin")
    r = client.get(f"/v1/audits/{missing}/unit-map/artifact", headers=alice.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    # A URI pointing into another tenant's folder is never served.
    escaping = succeeded_audit(client, db, alice, alice_model, artifact_uri=f"{bob.id}/../{bob.id}/x")
    assert client.get(f"/v1/audits/{escaping}/unit-map/artifact", headers=alice.headers).status_code == 404

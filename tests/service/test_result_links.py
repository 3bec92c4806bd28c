"""Results answer with API URLs and model sources, never absolute server paths or internal tenant ids."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import FinetuneResult, Score
from tests.service.conftest import Tenant_, set_job


def test_a_finetune_result_links_to_its_download_and_names_a_registrable_source(
    app: FastAPI, client: TestClient, db: Session, alice: Tenant_, alice_model: str
) -> None:
    data = client.post(
        "/v1/datasets", files={"file": ("t.jsonl", b'{"prompt": "a", "response": "b"}\n')}, headers=alice.headers
    ).json()["id"]
    job = client.post(
        "/v1/finetunes", json={"model_id": alice_model, "dataset_id": data}, headers=alice.headers
    ).json()["id"]
    stored = app.state.settings.artifact_dir.resolve() / str(alice.id) / "jobs" / job / "finetune" / "model"
    set_job(db, job, status="succeeded")
    db.add(FinetuneResult(job_id=uuid.UUID(job), loss_curve={}, output_model_uri=str(stored)))
    db.commit()
    r = client.get(f"/v1/finetunes/{job}/result", headers=alice.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["output_model_uri"], body["output_model_source"]) == (f"/v1/finetunes/{job}/model", f"finetune:{job}")
    assert str(alice.id) not in r.text and str(app.state.settings.artifact_dir.resolve()) not in r.text
    registered = client.post(
        "/v1/models", json={"name": "tuned", "source": body["output_model_source"]}, headers=alice.headers
    )
    assert registered.status_code == 201, registered.text


def test_evaluation_scores_link_to_the_records_route(
    client: TestClient, db: Session, alice: Tenant_, alice_model: str
) -> None:
    job = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    set_job(db, job, status="succeeded")
    db.add(
        Score(
            job_id=uuid.UUID(job),
            protocol_hash="a" * 64,
            metrics={},
            records_uri=f"{alice.id}/jobs/{job}/evaluation.json",
        )
    )
    db.commit()
    r = client.get(f"/v1/evaluations/{job}/scores", headers=alice.headers)
    assert r.status_code == 200 and r.json()[0]["records_uri"] == f"/v1/evaluations/{job}/records"
    assert str(alice.id) not in r.text


def test_malformed_finetune_sources_are_refused(client: TestClient, alice: Tenant_) -> None:
    for source in ("finetune:../../etc", "finetune:", f"finetune:{str(uuid.uuid4()).upper()}"):
        r = client.post("/v1/models", json={"name": "x", "source": source}, headers=alice.headers)
        assert r.status_code == 422 and r.json()["rule"] == "malformed_finetune", r.text

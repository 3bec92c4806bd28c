"""Over HTTP with a real Celery worker, Redis and PostgreSQL: audit, evaluation, fine-tune, comparison."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from tests.e2e.conftest import poll

pytestmark = pytest.mark.slow


def test_audit_evaluation_finetune_and_comparison_run_to_success(client, headers, model_id, worker, tmp_path):
    worker.start()
    r = client.post("/v1/audits", json={"model_id": model_id, "samples": 8}, headers=headers)
    assert r.status_code == 202, r.text
    audit = poll(client, r.headers["Location"], headers, worker=worker)
    assert (audit["status"], audit["attempts"], audit["progress"], audit["error"]) == ("succeeded", 1, 1.0, None)

    unit_map = client.get(f"/v1/audits/{audit['id']}/unit-map", headers=headers).json()
    assert unit_map["artifact_available"] is True and unit_map["layer_count"] == 2
    assert unit_map["config"]["samples"] == 8 and sum(c["units"] for c in unit_map["classes"].values()) > 0
    artifact = client.get(f"/v1/audits/{audit['id']}/unit-map/artifact", headers=headers)
    assert artifact.status_code == 200
    with zipfile.ZipFile(io.BytesIO(artifact.content)) as archive:
        summary = json.loads(archive.read("summary.json"))
    assert summary["classes"]["SCU"]["units"] == unit_map["classes"]["SCU"]["units"]

    r = client.post(
        "/v1/evaluations",
        json={"model_id": model_id, "audit_id": audit["id"], "ablate": "ESU", "max_new_tokens": 2},
        headers=headers,
    )
    evaluation = poll(client, r.headers["Location"], headers, worker=worker)
    assert evaluation["status"] == "succeeded", evaluation
    scores = client.get(f"/v1/evaluations/{evaluation['id']}/scores", headers=headers).json()
    assert len(scores) == 1 and len(scores[0]["protocol_hash"]) == 64
    assert scores[0]["metrics"]["ablation"]["classes"] == ["SCU"]
    result = client.get(f"/v1/evaluations/{evaluation['id']}/result", headers=headers)
    assert result.status_code == 200 and result.json()["records"]  # every prompt's answer, from the store
    records = client.get(f"/v1/evaluations/{evaluation['id']}/records", headers=headers)
    stored = result.json()["records"]
    assert records.status_code == 200 and records.json()["items"] == stored["harmful"] + stored["harmless"]

    pairs = "".join(json.dumps({"prompt": f"Count to {i}.", "response": f"1 to {i}."}) + "\n" for i in range(8))
    dataset = client.post("/v1/datasets", files={"file": ("train.jsonl", pairs.encode())}, headers=headers).json()
    r = client.post(
        "/v1/finetunes",
        json={
            "model_id": model_id,
            "dataset_id": dataset["id"],
            "mode": "freeze",
            "audit_id": audit["id"],
            "epochs": 1,
            "lr": 1e-3,
        },
        headers=headers,
    )
    finetune = poll(client, r.headers["Location"], headers, worker=worker)
    assert finetune["status"] == "succeeded", finetune
    result = client.get(f"/v1/finetunes/{finetune['id']}/result", headers=headers).json()
    assert len(result["loss_curve"]["steps"]) == 2 and result["loss_curve"]["masks"]["frozen_units"] > 0
    r = client.get(f"/v1/finetunes/{finetune['id']}/model", headers=headers)
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    from ssah_engine.loading import load_model

    assert load_model(str(tmp_path / "model")).model.config.model_type == "llama"  # the download loads as is

    r = client.post(
        "/v1/comparisons", json={"before_audit_id": audit["id"], "after_audit_id": audit["id"]}, headers=headers
    )
    comparison = poll(client, r.headers["Location"], headers, worker=worker)
    assert comparison["status"] == "succeeded", comparison
    crosstab = client.get(f"/v1/comparisons/{comparison['id']}/result", headers=headers).json()["crosstab"]
    assert crosstab["unchanged_fraction"] == 1.0

"""Labels on jobs and models (filters in lists) and the checkpoint series built from them."""

from __future__ import annotations

import copy
import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import Comparison, Score, UnitMap
from tests.service.conftest import SUMMARY, Tenant_, set_job


def labelled_model(client: TestClient, tenant: Tenant_, name: str, **labels: str) -> str:
    r = client.post(
        "/v1/models", json={"name": name, "source": "builtin:smollm2", "labels": labels}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["labels"] == labels
    return r.json()["id"]


def test_labels_filter_job_and_model_lists(client: TestClient, alice: Tenant_, bob: Tenant_):
    model = labelled_model(client, alice, "ck", run="a", checkpoint_step="12000")
    labelled_model(client, alice, "other", run="b")
    ids = {}
    for step in ("12000", "500"):
        body = {"model_id": model, "labels": {"checkpoint_step": step, "git_sha": f"sha{step}"}}
        r = client.post("/v1/audits", json=body, headers=alice.headers)
        assert r.status_code == 202 and r.json()["labels"] == body["labels"]
        ids[step] = r.json()["id"]
    client.post("/v1/audits", json={"model_id": model}, headers=alice.headers)

    def listed(path: str, tenant: Tenant_ = alice) -> list[str]:
        r = client.get(path, headers=tenant.headers)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    assert listed("/v1/audits?label=checkpoint_step:12000") == [ids["12000"]]
    assert listed("/v1/jobs?label=checkpoint_step:500&label=git_sha:sha500") == [ids["500"]]
    assert listed("/v1/jobs?label=checkpoint_step:500&label=git_sha:sha12000") == []
    assert sorted(listed("/v1/audits?label=git_sha")) == sorted(ids.values())  # present, any value
    assert listed("/v1/audits?label=checkpoint_step:12000", bob) == []
    assert listed("/v1/models?label=run:a") == [model]
    r = client.get("/v1/audits?label=:x", headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "query.label"
    page = client.get("/v1/audits?label=git_sha&limit=1", headers=alice.headers).json()
    assert "label=git_sha" in page["next"]  # the filter survives pagination


def test_labels_are_bounded(client: TestClient, alice: Tenant_):
    for labels in ({f"k{i}": "v" for i in range(33)}, {"bad key": "v"}, {"k": "x" * 257}, {"k": 3}):
        body = {"name": "m", "source": "builtin:smollm2", "labels": labels}
        assert client.post("/v1/models", json=body, headers=alice.headers).status_code == 422, labels


def finished_audit(client: TestClient, db: Session, tenant: Tenant_, model: str, scu: float) -> str:
    job_id = client.post("/v1/audits", json={"model_id": model}, headers=tenant.headers).json()["id"]
    set_job(db, job_id, status="succeeded", progress=1.0)
    summary = copy.deepcopy(SUMMARY)
    summary["classes"]["SCU"]["unit_fraction"] = scu
    db.add(UnitMap(job_id=uuid.UUID(job_id), summary=summary))
    db.commit()
    return job_id


def finished_evaluation(client: TestClient, db: Session, tenant: Tenant_, model: str, asr: float, **extra) -> str:
    job_id = client.post("/v1/evaluations", json={"model_id": model, **extra}, headers=tenant.headers).json()["id"]
    set_job(db, job_id, status="succeeded", progress=1.0)
    db.add(Score(job_id=uuid.UUID(job_id), protocol_hash="h", metrics={"safety": {"asr": asr, "over_refusal": 0.1}}))
    db.commit()
    return job_id


def test_a_series_orders_checkpoints_numerically_and_queues_the_role_transfers(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_
):
    audits, evaluations = {}, {}
    for step, scu, asr in (("10000", 0.03, 0.3), ("500", 0.01, 0.02), ("2000", 0.02, 0.1)):
        model = labelled_model(client, alice, f"ck{step}", run="sft", checkpoint_step=step)
        audits[step] = finished_audit(client, db, alice, model, scu)
        evaluations[step] = finished_evaluation(client, db, alice, model, asr)
        if step == "2000":  # an ablation study of the checkpoint is not its plain score
            finished_evaluation(client, db, alice, model, 0.9, audit_id=audits[step], ablate="SCU")
    other = labelled_model(client, alice, "other-run", run="dpo", checkpoint_step="700")
    finished_audit(client, db, alice, other, 0.5)

    r = client.post("/v1/series", json={"labels": {"run": "sft"}, "order_by": "checkpoint_step"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    series = r.json()
    assert [p["value"] for p in series["points"]] == ["500", "2000", "10000"]  # not text order
    assert [p["audit_id"] for p in series["points"]] == [audits["500"], audits["2000"], audits["10000"]]
    assert [p["evaluation_id"] for p in series["points"]] == [evaluations[s] for s in ("500", "2000", "10000")]
    assert [p["classes"]["SCU"]["unit_fraction"] for p in series["points"]] == [0.01, 0.02, 0.03]
    assert [p["safety"]["asr"] for p in series["points"]] == [0.02, 0.1, 0.3]
    transitions = series["transitions"]
    assert [(t["before"], t["after"], t["status"]) for t in transitions] == [
        ("500", "2000", "queued"),
        ("2000", "10000", "queued"),
    ]
    comparison = client.get(f"/v1/comparisons/{transitions[0]['comparison_id']}", headers=alice.headers).json()
    assert comparison["params"] == {"before_audit_id": audits["500"], "after_audit_id": audits["2000"]}

    # Asked again: the same comparisons, none queued twice; a finished one gives its cross-tab.
    set_job(db, transitions[0]["comparison_id"], status="succeeded")
    crosstab = {"classes": ["SCU", "UCU", "CU", "RU"], "unchanged_fraction": 0.9}
    db.add(Comparison(job_id=uuid.UUID(transitions[0]["comparison_id"]), crosstab=crosstab))
    db.commit()
    again = client.post(
        "/v1/series", json={"labels": {"run": "sft"}, "order_by": "checkpoint_step"}, headers=alice.headers
    )
    assert [t["comparison_id"] for t in again.json()["transitions"]] == [t["comparison_id"] for t in transitions]
    assert again.json()["transitions"][0]["crosstab"] == crosstab
    assert client.get("/v1/comparisons", headers=alice.headers).json()["total"] == 2

    alone = client.post(
        "/v1/series",
        json={"labels": {"run": "sft"}, "order_by": "checkpoint_step", "compare": False},
        headers=bob.headers,
    )
    assert alone.json()["points"] == []  # another tenant's jobs are not seen


def test_the_job_label_wins_over_its_models_and_text_values_sort_as_text(
    client: TestClient, db: Session, alice: Tenant_
):
    model = labelled_model(client, alice, "m", run="x", stage="base")
    first = finished_audit(client, db, alice, model, 0.01)
    job_id = client.post(
        "/v1/audits", json={"model_id": model, "labels": {"stage": "after-sft"}}, headers=alice.headers
    ).json()["id"]
    set_job(db, job_id, status="succeeded")
    db.add(UnitMap(job_id=uuid.UUID(job_id), summary=SUMMARY))
    db.commit()
    body = {"labels": {"run": "x"}, "order_by": "stage", "compare": False}
    series = client.post("/v1/series", json=body, headers=alice.headers).json()
    assert [(p["value"], p["audit_id"]) for p in series["points"]] == [("after-sft", job_id), ("base", first)]
    assert series["transitions"][0]["status"] == "none" and series["transitions"][0]["comparison_id"] is None

"""Gates: checked at submission (paths, operators, the job compared against), verdict written when the job succeeds."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.models import JobStatus
from tests.service.conftest import SUMMARY, Tenant_, succeeded_audit
from worker import results
from worker.lifecycle import claim_job, finish_job


def finish(factory: sessionmaker[Session], job_id: str, kind: str, status: JobStatus, store: Any = None) -> None:
    claim = claim_job(factory, uuid.UUID(job_id), kind=kind, stale_seconds=120)
    assert claim is not None
    finish_job(
        factory,
        claim,
        status,
        store=store and (lambda s: store(s, claim.job_id)),
        error="boom" if status == JobStatus.failed else None,
    )


def summary_with(scu_fraction: float, scu_units: int) -> dict:
    summary = copy.deepcopy(SUMMARY)
    summary["classes"]["SCU"].update(param_fraction=scu_fraction, units=scu_units)
    return summary


def test_an_audit_gate_compares_with_a_baseline_and_says_which_check_failed(
    client: TestClient, db: Session, session_factory: sessionmaker[Session], alice: Tenant_, alice_model: str
):
    baseline = succeeded_audit(client, db, alice, alice_model)  # SCU param_fraction 0.004
    gate = {
        "classes.SCU.param_fraction": {"max_change": 0.002, "against": baseline},
        "classes.SCU.units": {"max": 10},
        "classes.UCU.unit_fraction": {"min": 0.05, "max": 0.5},
    }
    r = client.post("/v1/audits", json={"model_id": alice_model, "gate": gate}, headers=alice.headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["gate"] == {"rules": {**gate, "classes.SCU.units": {"max": 10.0}}, "passed": None, "checks": []}
    assert "gate" not in r.json()["params"]  # kept apart from the engine's settings
    put = lambda s, j: results.put_unit_map(s, job_id=j, summary=summary_with(0.0055, 12), artifact_uri="x")  # noqa: E731
    finish(session_factory, job_id, "audit", JobStatus.succeeded, put)

    verdict = client.get(f"/v1/audits/{job_id}", headers=alice.headers).json()["gate"]
    assert verdict["passed"] is False
    checks = {c["path"]: c for c in verdict["checks"]}
    change = checks["classes.SCU.param_fraction"]
    assert change["passed"] is True and change["value"] == 0.0055 and change["against_value"] == 0.004
    assert change["change"] == pytest.approx(0.0015)
    assert checks["classes.SCU.units"] == {
        "path": "classes.SCU.units",
        "value": 12.0,
        "rule": {"max": 10.0},
        "passed": False,
        "reason": "12 > max 10",
    }
    assert checks["classes.UCU.unit_fraction"]["passed"] is True


def test_a_change_past_max_change_fails_and_a_passing_gate_passes(
    client: TestClient, db: Session, session_factory: sessionmaker[Session], alice: Tenant_, alice_model: str
):
    baseline = succeeded_audit(client, db, alice, alice_model)
    for fraction, passed in ((0.0065, False), (0.0035, True)):
        gate = {"classes.SCU.param_fraction": {"max_change": 0.002, "against": baseline}}
        job_id = client.post("/v1/audits", json={"model_id": alice_model, "gate": gate}, headers=alice.headers).json()[
            "id"
        ]
        put = lambda s, j: results.put_unit_map(s, job_id=j, summary=summary_with(fraction, 3), artifact_uri="x")  # noqa: E731, B023
        finish(session_factory, job_id, "audit", JobStatus.succeeded, put)
        verdict = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["gate"]
        assert verdict["passed"] is passed, verdict
        if not passed:
            assert "more than max_change 0.002" in verdict["checks"][0]["reason"]


def test_an_evaluation_gate_on_asr_and_over_refusal(
    client: TestClient, session_factory: sessionmaker[Session], alice: Tenant_, alice_model: str
):
    gate = {"safety.asr": {"max": 0.1}, "safety.over_refusal": {"max": 0.2}, "safety.missing": {"min": 0}}
    r = client.post("/v1/evaluations", json={"model_id": alice_model, "gate": gate}, headers=alice.headers)
    assert r.status_code == 202, r.text
    metrics = {"safety": {"asr": 0.05, "over_refusal": 0.3}}
    put = lambda s, j: results.put_score(s, job_id=j, protocol_hash="h", metrics=metrics, records_uri="x")  # noqa: E731
    finish(session_factory, r.json()["id"], "evaluation", JobStatus.succeeded, put)
    verdict = client.get(f"/v1/evaluations/{r.json()['id']}", headers=alice.headers).json()["gate"]
    assert [(c["path"], c["passed"]) for c in verdict["checks"]] == [
        ("safety.asr", True),
        ("safety.missing", False),
        ("safety.over_refusal", False),
    ]  # by path
    assert verdict["checks"][2]["reason"] == "0.3 > max 0.2"
    assert verdict["checks"][1]["reason"] == "the result has no number at safety.missing"
    assert verdict["passed"] is False


def test_a_failed_job_keeps_no_verdict(
    client: TestClient, session_factory: sessionmaker[Session], alice: Tenant_, alice_model: str
):
    gate = {"safety.asr": {"max": 0.1}}
    job_id = client.post("/v1/evaluations", json={"model_id": alice_model, "gate": gate}, headers=alice.headers).json()[
        "id"
    ]
    finish(session_factory, job_id, "evaluation", JobStatus.failed)
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["gate"]["passed"] is None


@pytest.mark.parametrize(
    ("gate", "loc", "words"),
    [
        ({"safety.asr": {"below": 0.1}}, "body.gate.safety.asr.below", "Extra inputs are not permitted"),
        ({"safety.asr": {}}, "body.gate.safety.asr", "needs min, max or max_change"),
        ({"classes.SCU.param_fraction": {"max_change": 0.1}}, "body.gate.classes.SCU.param_fraction", "go together"),
        ({"safety.asr": {"max": 0.1}}, "body.gate.safety.asr", "is not a path in an audit's result"),
        ({"classes.XYZ.units": {"max": 1}}, "body.gate.classes.XYZ.units", "e.g. classes.SCU.param_fraction"),
        ({"classes.SCU.units": {"min": 3, "max": 1}}, "body.gate.classes.SCU.units", "min is above max"),
    ],
)
def test_gates_are_checked_at_submission(
    client: TestClient, alice: Tenant_, alice_model: str, gate: dict, loc: str, words: str
):
    r = client.post("/v1/audits", json={"model_id": alice_model, "gate": gate}, headers=alice.headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == loc
    assert words in r.json()["detail"]


def test_against_must_be_the_callers_job_of_the_same_kind(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str
):
    bobs_model = client.post("/v1/models", json={"name": "b", "source": "builtin:smollm2"}, headers=bob.headers)
    bobs_audit = succeeded_audit(client, db, bob, bobs_model.json()["id"])
    alices_eval = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    for against, words in ((bobs_audit, f"no job {bobs_audit}"), (alices_eval, "is an evaluation; compare an audit")):
        gate = {"classes.SCU.param_fraction": {"max_change": 0.1, "against": against}}
        r = client.post("/v1/audits", json={"model_id": alice_model, "gate": gate}, headers=alice.headers)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == "body.gate.classes.SCU.param_fraction.against"
        assert words in r.json()["detail"]

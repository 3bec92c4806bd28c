"""The probe job body in-process against PostgreSQL on a tiny model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import sqlalchemy as sa

from service.models import ProbeResult
from tests.worker.conftest import add_job, add_model, reload
from tests.worker.test_tasks import AUDIT, _run

PROBE = {"ks": [2, 4], "queries": 3, "calibration": 8, "pool": "last", "prompt_format": "chat", "max_length": 512}


def test_probe_with_an_audit_stores_curves_direction_and_unit_writes(db, tenant, settings, factory, store):
    model = add_model(db, tenant, "builtin:tiny-llama")
    audit_id = add_job(db, tenant, "audit", AUDIT, model)
    assert _run(audit_id, "audit", settings, factory, store) == "succeeded"
    job_id = add_job(db, tenant, "probe", {**PROBE, "model_id": str(model), "audit_id": str(audit_id)}, model)
    assert _run(job_id, "probe", settings, factory, store) == "succeeded"
    assert reload(db, job_id).progress == 1.0
    row = db.scalars(sa.select(ProbeResult).where(ProbeResult.job_id == job_id)).one()
    summary = row.summary
    assert summary["queries"] == 3 and set(summary["distances"]["refusal"]) == {"2", "4"}
    assert len(summary["distances"]["gap"]["2"]) == 2  # one value per layer
    assert set(summary["unit_writes"]["classes"]) == {"SCU", "UCU", "CU", "RU"}
    assert summary["unit_map"] == {"audit_id": str(audit_id)}
    assert "resolved" not in summary["model"] and summary["model"]["loaded"]["source"] == "builtin:tiny-llama"
    with zipfile.ZipFile(Path(settings.artifact_dir) / row.artifact_uri) as archive:
        assert {"direction.safetensors", "direction.json", "probe.json"} <= set(archive.namelist())
    assert _run(job_id, "probe", settings, factory, store) == "skipped"  # a redelivered message
    assert db.scalars(sa.select(ProbeResult.id).where(ProbeResult.job_id == job_id)).all() == [row.id]


def test_probe_with_a_bad_setting_fails_with_the_engines_message(db, tenant, settings, factory, store):
    model = add_model(db, tenant, "builtin:tiny-llama")
    job_id = add_job(db, tenant, "probe", {**PROBE, "ks": [4, 2]}, model)
    assert _run(job_id, "probe", settings, factory, store) == "failed"
    assert "ks must be increasing" in reload(db, job_id).error

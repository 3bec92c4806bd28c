"""Job errors name artifact keys, never absolute server paths or the tenant's internal id."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.worker.conftest import add_job, reload
from worker import jobs
from worker.public_errors import public_error
from worker.runner import run_job


def test_a_missing_artifact_fails_the_job_without_server_paths_or_tenant_ids(db, tenant, settings, factory, store):
    before, after = str(uuid.uuid4()), str(uuid.uuid4())
    job_id = add_job(db, tenant, "comparison", {"before_audit_id": before, "after_audit_id": after})
    outcome = run_job(job_id, "comparison", jobs.BODIES["comparison"], settings=settings, factory=factory, store=store)
    error = reload(db, job_id).error
    assert outcome == "failed" and f"jobs/{before}/unit_map" in error  # the key, relative to the tenant's folder
    assert str(tenant) not in error
    assert str(Path(settings.artifact_dir).resolve()) not in error and str(settings.artifact_dir) not in error


def test_public_error_keeps_the_tenants_own_source_and_basenames_only(tmp_path: Path):
    tenant = uuid.uuid4()
    artifacts = tmp_path / "artifacts"
    text = (
        f"could not load model '/models/llama': no file /root/.cache/huggingface/hub/models--x/snapshots/abc/"
        f"config.json; artifact {tenant}/jobs/j/unit_map is missing from {artifacts}; "
        f"scratch {artifacts}/.scratch/tmp1/x; broker redis://:pw@h:6379/0; tenant {tenant}"
    )
    shown = public_error(text, artifact_dir=artifacts, tenant_id=tenant, model_source="/models/llama")
    assert shown == (
        "could not load model '/models/llama': no file .../config.json; artifact jobs/j/unit_map is "
        "missing from <artifact store>; scratch <artifact store>/.scratch/tmp1/x; "
        "broker redis://:***@h:6379/0; tenant <tenant>"
    )

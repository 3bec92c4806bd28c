"""The worker checks the model policy again before loading: a refused source fails the job at once, no retry."""

from __future__ import annotations

import pytest

from service.model_policy import tenant_model_root
from tests.worker.conftest import add_job, add_model, reload
from worker import job_configs, jobs, models
from worker.runner import run_job

AUDIT = {"samples": 4, "method": "wifv", "max_length": 64, "cuts": {"ru": 0.1, "scu": 0.05, "ucu": 0.1}}


@pytest.mark.parametrize(
    ("source", "overrides", "rule"),
    [
        ("../../etc", {}, "no_parent_components"),  # a row written behind the API's back
        ("file:///etc/passwd", {}, "no_urls"),
        ("/etc", {}, "allowed_local_roots"),
        ("evil/model", {"allowed_hub_orgs": ["meta-llama"]}, "allowed_hub_orgs"),  # the policy tightened
    ],
)
def test_a_refused_source_fails_the_job_with_the_rule_and_is_not_retried(
    db, tenant, settings, factory, store, source, overrides, rule
):
    settings = settings.model_copy(update=overrides)
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, source))
    outcome = run_job(job_id, "audit", jobs.BODIES["audit"], settings=settings, factory=factory, store=store)
    job = reload(db, job_id)
    assert (outcome, job.status, job.attempts) == ("failed", "failed", 1)
    assert job.error.startswith("model source ") and f"model policy ({rule})" in job.error
    assert job.progress_message != "loading model"  # refused before any loading started


def test_a_symlink_out_of_the_tenants_artifacts_is_refused(db, tenant, settings, factory, store, tmp_path):
    link = tmp_path / "link-target"
    link.mkdir()
    inside = tmp_path / "artifacts" / str(tenant) / "jobs" / "j" / "finetune"
    inside.mkdir(parents=True)
    (inside / "model").symlink_to(link)
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, str(inside / "model")))
    assert run_job(job_id, "audit", jobs.BODIES["audit"], settings=settings, factory=factory, store=store) == "failed"
    assert "(symlink_escape)" in reload(db, job_id).error


def test_allowed_source_accepts_builtins_and_the_tenants_own_models(settings, tenant):
    assert models.allowed_source(settings, tenant_id=tenant, source="builtin:tiny-llama") == "builtin:tiny-llama"
    own = f"{tenant_model_root(settings.artifact_dir, tenant)}/j/finetune/model"
    assert models.allowed_source(settings, tenant_id=tenant, source=own) == own


def test_trust_remote_code_is_off_unless_the_deployment_enables_it(settings):
    assert models.load_options(settings).trust_remote_code is False
    enabled = settings.model_copy(update={"allow_trust_remote_code": True})
    assert models.load_options(enabled).trust_remote_code is True


def test_request_limits_reach_the_engine_configs():
    assert job_configs.audit_config({"samples": 8, "max_length": 256}).max_length == 256
    assert job_configs.audit_config({}).max_length == 512
    assert job_configs.finetune_config({"mode": "full", "max_length": 128}, dataset_path=str).max_length == 128
    capped = job_configs.evaluation_protocol({"samples": 3}, harmful=None, instructions=None, sample_limit=None)
    assert capped.harmful.limit == capped.harmless.limit == 3  # `ssah eval --samples`: harmful and harmless
    worker_cap = job_configs.evaluation_protocol({"samples": 50}, harmful=None, instructions=None, sample_limit=2)
    assert all(ref.limit <= 2 for ref in worker_cap.datasets().values())  # the worker's own cap still wins


def test_samples_cap_an_uploaded_harmful_set_too():
    protocol = job_configs.evaluation_protocol(
        {"samples": 4}, harmful="/data/h.jsonl", instructions=None, sample_limit=None
    )
    assert (protocol.harmful.source, protocol.harmful.limit, protocol.harmless.limit) == ("/data/h.jsonl", 4, 4)

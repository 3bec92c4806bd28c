"""Task bodies run in-process against PostgreSQL on tiny models: results, failures, cancel, idempotency."""

from __future__ import annotations

import json
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
import torch

from service.models import Comparison, EvaluationRecord, FinetuneResult, Job, Score, UnitMap, utcnow
from ssah_engine.unitmap import UnitMap as EngineUnitMap
from tests.worker.conftest import add_dataset, add_job, add_model, reload
from worker import jobs, models
from worker.runner import run_job

AUDIT = {"samples": 4, "method": "wifv", "cuts": {"ru": 0.1, "scu": 0.05, "ucu": 0.1}}


def _run(job_id, kind, settings, factory, store, **kwargs):
    return run_job(job_id, kind, jobs.BODIES[kind], settings=settings, factory=factory, store=store, **kwargs)


def _audit(db, tenant, settings, factory, store, source="builtin:tiny-llama"):
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, source))
    return job_id, _run(job_id, "audit", settings, factory, store)


def test_audit_stores_unit_map_and_artifacts_and_a_rerun_changes_nothing(db, tenant, settings, factory, store):
    job_id, outcome = _audit(db, tenant, settings, factory, store)
    assert outcome == "succeeded"
    job = reload(db, job_id)
    assert (job.status, job.progress, job.attempts, job.error) == ("succeeded", 1.0, 1, None)
    assert job.started_at <= job.finished_at
    row = db.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).one()
    classes = row.summary["classes"]
    assert sum(c["units"] for c in classes.values()) == row.summary["units"]["total"] > 0
    assert row.summary["config"]["samples"] == 4 and row.summary["model"]["source"] == "builtin:tiny-llama"
    assert row.artifact_uri == f"{tenant}/jobs/{job_id}/unit_map.zip"
    with zipfile.ZipFile(Path(settings.artifact_dir) / row.artifact_uri) as archive:
        assert sorted(archive.namelist()) == ["summary.json", "unit_map.safetensors"]
    loaded = EngineUnitMap.load(Path(settings.artifact_dir) / f"{tenant}/jobs/{job_id}/unit_map")
    assert int(loaded.mask(["SCU"]).sum()) == classes["SCU"]["units"]

    version, unit_map_id = job.version, row.id
    assert _run(job_id, "audit", settings, factory, store) == "skipped"  # a redelivered message
    job = reload(db, job_id)
    assert (job.version, job.attempts) == (version, 1)
    assert db.scalars(sa.select(UnitMap.id).where(UnitMap.job_id == job_id)).all() == [unit_map_id]


def test_unknown_model_source_fails_with_the_loaders_message(db, tenant, settings, factory, store):
    job_id, outcome = _audit(db, tenant, settings, factory, store, source="builtin:nope")
    assert outcome == "failed"
    job = reload(db, job_id)
    assert job.status == "failed"
    assert (
        job.error
        == "unknown builtin model 'builtin:nope'; builtins: builtin:smollm2, builtin:qwen2.5-coder-0.5b, builtin:tiny-<family>"
    )
    assert db.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).all() == []


def test_broken_dataset_fails_naming_dataset_line_and_field(db, tenant, settings, factory, store):
    text = '{"prompt": "How do I bake bread?", "response": "Knead flour."}\n{"response": "no prompt here"}\n'
    dataset_id = add_dataset(db, settings, tenant, text, name="broken.jsonl")
    job_id = add_job(db, tenant, "audit", {**AUDIT, "safety_dataset_id": str(dataset_id)}, add_model(db, tenant))
    assert _run(job_id, "audit", settings, factory, store) == "failed"
    error = reload(db, job_id).error
    assert error == (
        f"dataset 'broken.jsonl' ({dataset_id}), line 2, field 'prompt': "
        "missing (expected 'prompt', or Alpaca-style 'instruction')"
    )


def test_cancel_requested_while_running_stops_the_job(db, tenant, settings, factory, store):
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant))

    def cancel_then_audit(run):
        with factory.begin() as session:  # the API's cancel, while the job runs
            session.get(Job, job_id).cancel_requested = True
        jobs.audit(run)

    outcome = run_job(job_id, "audit", cancel_then_audit, settings=settings, factory=factory, store=store)
    assert outcome == "cancelled"
    job = reload(db, job_id)
    assert (job.status, job.error, job.progress_message) == ("cancelled", None, "cancelled while running")
    assert job.finished_at is not None
    assert db.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).all() == []


def test_running_job_is_left_to_a_live_worker_and_taken_over_from_a_dead_one(db, tenant, settings, factory, store):
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant))
    with factory.begin() as session:
        job = session.get(Job, job_id)
        job.status, job.attempts, job.started_at = "running", 1, utcnow()
    stale_file = Path(settings.artifact_dir) / f"{tenant}/jobs/{job_id}/partial.bin"
    stale_file.parent.mkdir(parents=True)
    stale_file.write_bytes(b"half written")
    assert _run(job_id, "audit", settings, factory, store) == "skipped"  # heartbeat fresh
    assert reload(db, job_id).attempts == 1

    db.execute(sa.update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(minutes=5)))
    db.commit()
    assert _run(job_id, "audit", settings, factory, store) == "succeeded"
    job = reload(db, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert not stale_file.exists()  # the dead attempt's partial artifacts are gone
    assert len(db.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).all()) == 1


def test_late_write_of_a_superseded_attempt_is_dropped(db, tenant, settings, factory, store):
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant))

    def taken_over_then_audit(run):
        with factory.begin() as session:  # another worker took the job over meanwhile
            session.get(Job, job_id).attempts += 1
        jobs.audit(run)

    assert (
        run_job(job_id, "audit", taken_over_then_audit, settings=settings, factory=factory, store=store) == "superseded"
    )
    job = reload(db, job_id)
    assert (job.status, job.attempts) == ("running", 2)
    assert db.scalars(sa.select(UnitMap).where(UnitMap.job_id == job_id)).all() == []


def test_evaluation_stores_scores_with_protocol_hash_and_records(db, tenant, settings, factory, store):
    audit_id, _ = _audit(db, tenant, settings, factory, store)
    model_id = reload(db, audit_id).model_id
    job_id = add_job(
        db,
        tenant,
        "evaluation",
        {"model_id": str(model_id), "audit_id": str(audit_id), "ablate": "SCU", "max_new_tokens": 2},
        model_id,
    )
    assert _run(job_id, "evaluation", settings, factory, store) == "succeeded"
    score = db.scalars(sa.select(Score).where(Score.job_id == job_id)).one()
    assert len(score.protocol_hash) == 64 and score.protocol_hash == score.metrics["protocol"]["hash"]
    settings_used = score.metrics["protocol"]["settings"]
    assert settings_used["max_new_tokens"] == 2 and settings_used["harmful"]["limit"] == 2
    assert score.metrics["ablation"]["classes"] == ["SCU"] and score.metrics["ablation"]["audit_id"] == str(audit_id)
    assert score.metrics["ablation"]["compensation"] == "none" == settings_used["ablation_compensation"]
    assert 0.0 <= score.metrics["safety"]["asr"] <= 1.0 and "records" not in score.metrics
    records = json.loads((Path(settings.artifact_dir) / score.records_uri).read_text())["records"]
    assert len(records["harmful"]) == 2 * len(settings_used["conditions"])
    rows = db.scalars(
        sa.select(EvaluationRecord).where(EvaluationRecord.job_id == job_id).order_by(EvaluationRecord.position)
    ).all()  # the same records, in the database, in the file's order
    assert [row.record for row in rows] == records["harmful"] + records["harmless"]
    assert [row.position for row in rows] == list(range(len(rows)))
    headline = settings_used["refusal_lists"][0]
    assert [(r.prompt_set, r.condition, r.verdict, r.judge_verdict) for r in rows] == [
        (r["set"], r["condition"], r["verdicts"][headline], None) for r in records["harmful"] + records["harmless"]
    ]


def test_evaluation_takes_format_conditions_compensation_and_a_random_control(db, tenant, settings, factory, store):
    audit_id, _ = _audit(db, tenant, settings, factory, store)
    model_id = reload(db, audit_id).model_id
    params = {
        "model_id": str(model_id),
        "audit_id": str(audit_id),
        "ablate": ["SCU", "RU"],
        "control": "random",
        "seed": 3,
        "compensation": "pooled",
        "prompt_format": "no_inst",
        "conditions": ["no_system"],
        "max_new_tokens": 2,
    }
    job_id = add_job(db, tenant, "evaluation", params, model_id)
    assert _run(job_id, "evaluation", settings, factory, store) == "succeeded"
    metrics = db.scalars(sa.select(Score).where(Score.job_id == job_id)).one().metrics
    used = metrics["protocol"]["settings"]
    assert (used["prompt_format"], used["conditions"], used["ablation_compensation"]) == (
        "no_inst",
        ["no_system"],
        "pooled",
    )
    ablation = metrics["ablation"]
    assert (ablation["classes"], ablation["control"], ablation["seed"]) == (["SCU", "RU"], "random", 3)
    records = json.loads((Path(settings.artifact_dir) / metrics_records_uri(db, job_id)).read_text())["records"]
    assert all(r["rendered_prompt"] == r["prompt"] + "\n" for r in records["harmful"])  # no_inst, no system prompt


def metrics_records_uri(db, job_id):
    return db.scalars(sa.select(Score).where(Score.job_id == job_id)).one().records_uri


def test_finetune_trains_a_private_copy_and_stores_the_loss_curve(db, tenant, settings, factory, store):
    pairs = "".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i} it is."}) + "\n" for i in range(4))
    dataset_id = add_dataset(db, settings, tenant, pairs, name="train.jsonl")
    model_id = add_model(db, tenant)
    cached = models.model_cache(settings).get("builtin:tiny-llama", models.load_options(settings))
    before = {name: p.detach().clone() for name, p in cached.model.named_parameters()}
    job_id = add_job(
        db,
        tenant,
        "finetune",
        {"model_id": str(model_id), "dataset_id": str(dataset_id), "mode": "full", "epochs": 1, "lr": 1e-3},
        model_id,
    )
    assert _run(job_id, "finetune", settings, factory, store) == "succeeded"
    result = db.scalars(sa.select(FinetuneResult).where(FinetuneResult.job_id == job_id)).one()
    steps = result.loss_curve["steps"]
    assert len(steps) == 1 and steps[0]["loss"] > 0  # 4 pairs, batch 4, 1 epoch
    assert (Path(result.output_model_uri) / "config.json").is_file()
    assert all(torch.equal(before[name], p) for name, p in cached.model.named_parameters())


def test_comparison_of_an_audit_with_itself_keeps_every_role(db, tenant, settings, factory, store):
    audit_id, _ = _audit(db, tenant, settings, factory, store)
    job_id = add_job(db, tenant, "comparison", {"before_audit_id": str(audit_id), "after_audit_id": str(audit_id)})
    assert _run(job_id, "comparison", settings, factory, store) == "succeeded"
    crosstab = db.scalars(sa.select(Comparison).where(Comparison.job_id == job_id)).one().crosstab
    assert crosstab["unchanged_fraction"] == 1.0


def test_comparison_of_a_missing_unit_map_fails_clearly(db, tenant, settings, factory, store):
    ghost = uuid.uuid4()
    job_id = add_job(db, tenant, "comparison", {"before_audit_id": str(ghost), "after_audit_id": str(ghost)})
    assert _run(job_id, "comparison", settings, factory, store) == "failed"
    # The key relative to the tenant's folder; neither the tenant id nor the server path (worker/public_errors.py).
    assert reload(db, job_id).error == f"artifact jobs/{ghost}/unit_map is missing from <artifact store>"


def test_a_streamed_audit_job_labels_units_as_the_whole_model_audit(db, tenant, settings, factory, store, tmp_path):
    from ssah_engine.testing import tiny_model

    model, tokenizer = tiny_model("llama", seed=1)
    checkpoint = tmp_path / "models" / "tiny"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    local = settings.model_copy(update={"allowed_local_roots": [tmp_path / "models"]})
    model_id = add_model(db, tenant, str(checkpoint))
    whole, streamed = (add_job(db, tenant, "audit", {**AUDIT, "stream_layers": s}, model_id) for s in (False, True))
    assert _run(whole, "audit", local, factory, store) == "succeeded", reload(db, whole).error
    assert _run(streamed, "audit", local, factory, store) == "succeeded", reload(db, streamed).error
    maps = [
        EngineUnitMap.load(Path(settings.artifact_dir) / f"{tenant}/jobs/{job}/unit_map") for job in (whole, streamed)
    ]
    assert torch.equal(maps[0].labels, maps[1].labels)

"""Before and after loading: pull-request revisions refused, oversized configs refused unloaded, the commit recorded."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import sqlalchemy as sa

from service.models import Score, UnitMap
from ssah_engine.testing import tiny_model
from tests.worker.conftest import add_job, add_model, reload
from worker import jobs, model_size
from worker.runner import run_job

AUDIT = {"samples": 4, "method": "wifv", "cuts": {"ru": 0.1, "scu": 0.05, "ucu": 0.1}}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _run(job_id, kind, settings, factory, store):
    return run_job(job_id, kind, jobs.BODIES[kind], settings=settings, factory=factory, store=store)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding ``Qwen/tiny`` at commit COMMIT, branch ``main`` pointing at it (offline)."""
    root = tmp_path / "hf-cache"
    repo = root / "models--Qwen--tiny"
    model, tokenizer = tiny_model("llama")
    model.save_pretrained(repo / "snapshots" / COMMIT)
    tokenizer.save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    return root


def test_every_result_records_the_commit_its_model_was_loaded_at(db, tenant, settings, factory, store, hub_cache):
    settings = settings.model_copy(update={"allowed_hub_orgs": ["Qwen"]})
    model_id = add_model(db, tenant, "Qwen/tiny@main")
    audit = add_job(
        db, tenant, "audit", {**AUDIT, "max_length": 512}, model_id
    )  # the saved tokenizer's prompts are longer
    assert _run(audit, "audit", settings, factory, store) == "succeeded", reload(db, audit).error
    summary = db.scalars(sa.select(UnitMap.summary).where(UnitMap.job_id == audit)).one()
    assert summary["model"]["loaded"] == {"source": "Qwen/tiny@main", "revision": "main", "commit": COMMIT}
    saved = json.loads((Path(settings.artifact_dir) / f"{tenant}/jobs/{audit}/unit_map/summary.json").read_text())
    assert saved["model"]["loaded"]["commit"] == COMMIT  # the artifact says it too

    evaluation = add_job(db, tenant, "evaluation", {"max_new_tokens": 4}, model_id)
    assert _run(evaluation, "evaluation", settings, factory, store) == "succeeded", reload(db, evaluation).error
    metrics = db.scalars(sa.select(Score.metrics).where(Score.job_id == evaluation)).one()
    assert metrics["model"]["loaded"]["commit"] == COMMIT


def test_a_builtin_records_no_commit(db, tenant, settings, factory, store):
    audit = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, "builtin:tiny-llama"))
    assert _run(audit, "audit", settings, factory, store) == "succeeded"
    summary = db.scalars(sa.select(UnitMap.summary).where(UnitMap.job_id == audit)).one()
    assert summary["model"]["loaded"] == {"source": "builtin:tiny-llama", "revision": None, "commit": None}


@pytest.mark.parametrize("revision", ["refs/pr/1", "refs/pr/999", "refs/convert/parquet"])
def test_a_pull_request_revision_in_a_job_row_is_refused_before_loading(db, tenant, settings, factory, store, revision):
    settings = settings.model_copy(update={"allowed_hub_orgs": ["Qwen"]})
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, f"Qwen/Qwen2.5-0.5B@{revision}"))
    assert _run(job_id, "audit", settings, factory, store) == "failed"
    job = reload(db, job_id)
    assert "(hub_pr_revisions)" in job.error and job.progress_message != "loading model"


def _huge_model_dir(root: Path) -> Path:
    directory = root / "huge"
    directory.mkdir(parents=True)
    # What the attack declared: a Llama of 160 layers at hidden size 32768 (about 2 T parameters).
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 32768,
                "intermediate_size": 131072,
                "num_hidden_layers": 160,
                "num_attention_heads": 256,
                "num_key_value_heads": 8,
                "vocab_size": 128256,
                "tie_word_embeddings": False,
            }
        )
    )
    return directory


def test_a_config_declaring_a_huge_model_is_refused_without_loading(
    db, tenant, settings, factory, store, tmp_path, monkeypatch
):
    models = tmp_path / "models"
    settings = settings.model_copy(update={"allowed_local_roots": [models], "max_model_bytes": 64 * 2**30})
    job_id = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, str(_huge_model_dir(models))))

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("worker.models.load_model", never)
    assert _run(job_id, "audit", settings, factory, store) == "failed"
    error = reload(db, job_id).error
    assert "refused before loading" in error and "B parameters" in error
    assert "64.0 GiB (max_model_bytes)" in error  # the limit, named with its setting
    assert "GiB in float32" in error  # and the estimate


def test_the_estimate_is_close_for_a_real_config_and_the_default_limit_is_the_machines_memory(settings):
    from transformers import LlamaConfig

    # SmolLM2-135M's shape: 134.5 M parameters with tied embeddings.
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    found = model_size.estimate(config)
    assert 0.95 * 134.5e6 < found.parameters < 1.05 * 134.5e6
    assert model_size.memory_limit(settings) > 0
    assert model_size.memory_limit(settings.model_copy(update={"max_model_bytes": 123})) == 123


def test_a_finetune_source_loads_the_tenants_own_trained_model(db, tenant, settings, factory, store):
    import uuid as uuid_

    from service.model_policy import finetune_model_dir

    trained = f"finetune:{uuid_.uuid4()}"
    model, tokenizer = tiny_model("llama")
    directory = Path(finetune_model_dir(settings.artifact_dir, tenant, trained))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    audit = add_job(db, tenant, "audit", {**AUDIT, "max_length": 512}, add_model(db, tenant, trained))
    assert _run(audit, "audit", settings, factory, store) == "succeeded", reload(db, audit).error
    summary = db.scalars(sa.select(UnitMap.summary).where(UnitMap.job_id == audit)).one()
    assert summary["model"]["loaded"]["source"] == trained
    other = add_job(db, tenant, "audit", AUDIT, add_model(db, tenant, f"finetune:{uuid_.uuid4()}"))
    assert _run(other, "audit", settings, factory, store) == "failed"
    assert str(tenant) not in reload(db, other).error and str(settings.artifact_dir) not in reload(db, other).error

"""A fine-tune job passes the freeze rule, the paper schedule and refusal tracking through to the engine."""

from __future__ import annotations

import json

import sqlalchemy as sa

from service.models import FinetuneResult
from tests.worker.conftest import add_dataset, add_job, add_model
from tests.worker.test_tasks import _run
from worker import job_configs


def test_finetune_job_tracks_the_refusal_margin_and_stops(db, tenant, settings, factory, store):
    pairs = "".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i} it is."}) + "\n" for i in range(8))
    dataset_id = add_dataset(db, settings, tenant, pairs, name="train.jsonl")
    model_id = add_model(db, tenant)
    params = {
        "model_id": str(model_id),
        "dataset_id": str(dataset_id),
        "mode": "full",
        "epochs": 1,
        "lr": 1e-3,
        "max_length": 64,
        "track_refusal": True,
        "track_every": 1,
        "stop_if_refusal_below": 1e9,
        "paper_schedule": True,
    }
    job_id = add_job(db, tenant, "finetune", params, model_id)
    assert _run(job_id, "finetune", settings, factory, store) == "succeeded"
    curve = db.scalars(sa.select(FinetuneResult).where(FinetuneResult.job_id == job_id)).one().loss_curve
    assert len(curve["steps"]) == 1 and "refusal_margin" in curve["steps"][0]  # stopped at the first measurement
    track = curve["refusal_track"]
    assert track["stop"]["reason"] == "refusal_margin_below" and "refusal_margin" in track["baseline"]
    assert curve["schedule"]["name"] == "paper" and curve["schedule"]["arm"] == "plain"
    assert curve["masks"]["freeze_rule"] == "rows"  # a job without the field keeps the rule it was queued under


def test_finetune_params_reach_the_engine_config():
    config = job_configs.finetune_config(
        {
            "mode": "freeze",
            "setting": "i",
            "freeze_rule": "function",
            "paper_schedule": True,
            "track_refusal": True,
            "track_every": 5,
            "stop_if_refusal_below": -2.5,
        },
        dataset_path=lambda dataset_id: f"/data/{dataset_id}.jsonl",
    )
    assert (config.freeze_rule, config.paper_schedule, config.track_refusal) == ("function", True, True)
    assert (config.track_every, config.stop_if_refusal_below) == (5, -2.5)

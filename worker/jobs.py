"""The job bodies: each calls one engine function and stores what it returned.

A body gets a ``JobRun`` (worker/runner.py) that already marked the job running; it ends by
``run.succeed(...)``, which writes the results and the final status in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from service.model_policy import check_judge
from ssah_engine.audit import run_audit
from ssah_engine.evaluation import evaluate
from ssah_engine.finetune import run_finetune
from ssah_engine.probe import run_probe
from ssah_engine.transfer import role_transfer
from worker import datasets, job_configs, results
from worker.runner import Body, JobRun
from worker.store import job_key


def audit(run: JobRun) -> None:
    """Label every unit of the model; store the unit map (summary in the database, files as artifacts)."""
    params = run.params
    safety = run.dataset(params.get("safety_dataset_id"), default=datasets.DEFAULT_SAFETY)
    utility = run.dataset(params.get("utility_dataset_id"), default=datasets.DEFAULT_UTILITY)
    config = job_configs.audit_config(params)
    unit_map = run_audit(run.model(streamed=config.stream_layers), safety, utility, config, progress=run.progress)
    unit_map.model.update(loaded=run.loaded_model)  # the commit it ran on, in the artifact and the summary
    directory = unit_map.save(run.scratch / "unit_map")
    archive = shutil.make_archive(str(run.scratch / "unit_map"), "zip", directory)
    summary = unit_map.summary()
    run.publish(directory, "unit_map")  # read back by evaluations, fine-tunes and comparisons
    uri = run.publish(archive, "unit_map.zip")  # what GET .../unit-map/artifact serves
    run.succeed(lambda s: results.put_unit_map(s, job_id=run.id, summary=summary, artifact_uri=uri))


def evaluation(run: JobRun) -> None:
    """Score safety and utility, with classes of an audit's units (or a matched random control) ablated when asked."""
    params = run.params
    protocol = job_configs.evaluation_protocol(
        params,
        harmful=run.prompt_source(params.get("harmful_source")) or run.dataset_path(params.get("safety_dataset_id")),
        harmless=run.prompt_source(params.get("harmless_source")),
        instructions=run.dataset_path(params.get("utility_dataset_id")),
        sample_limit=run.settings.eval_sample_limit,
        suffixes=run.dataset_path(params.get("suffixes_dataset_id")),
    )
    judge_key = None
    if protocol.judge is not None:  # checked again: the allow-lists may have tightened since the API took the job
        check_judge(run.settings, run.claim.tenant_id, dataclasses.asdict(protocol.judge))
        judge_key = os.environ.get(protocol.judge.api_key_env) if protocol.judge.api_key_env else None
    loaded = run.model()
    ablation = job_configs.ablation_spec(params)
    unit_map = run.unit_map(params["audit_id"]) if ablation else None
    result = evaluate(
        loaded, protocol, progress=run.progress, ablation=ablation, unit_map=unit_map, judge_api_key=judge_key
    )  # weights restored
    if ablation:
        result["ablation"]["audit_id"] = params["audit_id"]
    result["model"]["loaded"] = run.loaded_model
    path = run.scratch / "evaluation.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    uri = run.publish(path, "evaluation.json")  # with the per-prompt records
    metrics = {key: value for key, value in result.items() if key != "records"}
    zero_shot = metrics.get("utility", {}).get("zero_shot", {})
    if "samples" in zero_shot:  # lm-eval's per-sample results stay in evaluation.json, out of the scores row
        metrics["utility"] = metrics["utility"] | {"zero_shot": {k: v for k, v in zero_shot.items() if k != "samples"}}
    run.succeed(
        lambda s: results.put_score(
            s,
            job_id=run.id,
            protocol_hash=result["protocol"]["hash"],
            metrics=metrics,
            records_uri=uri,
            records=result["records"],
        )
    )


def finetune(run: JobRun) -> None:
    """Fine-tune a private copy of the model; store the loss curve and the trained model."""
    params = run.params
    config = job_configs.finetune_config(params, run.dataset_path)
    data = run.dataset(params["dataset_id"])
    unit_map = run.unit_map(params["audit_id"]) if params.get("audit_id") else None
    utility = (
        run.dataset(None, default=datasets.DEFAULT_UTILITY) if config.mode == "budget" and unit_map is None else None
    )
    loaded = run.model(fresh=True, dtype="float32")  # trains in place: never the cached copy; fp32 master weights
    out = run.scratch / "finetune"
    result = run_finetune(loaded, data, config, unit_map, out, progress=run.progress, utility=utility)
    run.publish(out, "finetune")
    model_uri = run.store.locate(job_key(run.claim.tenant_id, run.id, "finetune/model"))
    curve = {
        "steps": result.history,
        "masks": result.masks,
        "evaluation": result.evaluation,
        "model": {"loaded": run.loaded_model},
        "schedule": result.schedule,
        "refusal_track": result.tracking,
    }
    run.succeed(lambda s: results.put_finetune_result(s, job_id=run.id, loss_curve=curve, output_model_uri=model_uri))


def comparison(run: JobRun) -> None:
    """Cross-tabulate how units changed role between two audits."""
    params = run.params
    crosstab = role_transfer(run.unit_map(params["before_audit_id"]), run.unit_map(params["after_audit_id"]))
    run.succeed(lambda s: results.put_comparison(s, job_id=run.id, crosstab=crosstab))


def probe(run: JobRun) -> None:
    """Probe the model (distance curves, refusal direction; unit writes per class with an audit); store the result."""
    params = run.params
    config = job_configs.probe_config(params)
    harmful = run.dataset(params.get("harmful_dataset_id"), default=datasets.DEFAULT_SAFETY)
    harmless = run.dataset(params.get("harmless_dataset_id"), default=datasets.DEFAULT_UTILITY, require_response=False)
    unit_map = run.unit_map(params["audit_id"]) if params.get("audit_id") else None
    report = run_probe(run.model(), harmful, harmless, config, unit_map=unit_map, progress=run.progress)
    report.data["model"]["loaded"] = run.loaded_model
    report.data["model"].pop("resolved", None)  # a server path; ``loaded`` says what ran
    if params.get("audit_id"):
        report.data["unit_map"] = {"audit_id": params["audit_id"]}
    directory = report.save(run.scratch / "probe")
    archive = shutil.make_archive(str(run.scratch / "probe"), "zip", directory)
    uri = run.publish(archive, "probe.zip")
    run.succeed(lambda s: results.put_probe_result(s, job_id=run.id, summary=report.data, artifact_uri=uri))


BODIES: dict[str, Body] = {
    "audit": audit,
    "evaluation": evaluation,
    "finetune": finetune,
    "comparison": comparison,
    "probe": probe,
}

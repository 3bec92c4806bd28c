"""The five stages of `ssah reproduce`, one function each, on top of the engine's public API.

Each stage writes its engine outputs (evaluation.json, unit maps, fine-tune directories) under
``DIR/<stage>/`` and returns a JSON-ready summary; ``run.py`` strings them together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.classes import CLASSES
from ssah_engine.data import Dataset, load_dataset
from ssah_engine.evaluation import AblationSpec, DataRef, Protocol, compare, evaluate, load_pinned
from ssah_engine.evaluation.refusal import opens_with
from ssah_engine.finetune import FinetuneConfig, run_finetune
from ssah_engine.loading import LoadedModel, LoadOptions, load_model
from ssah_engine.unitmap import UnitMap

from . import plan as sets
from .plan import Plan

Say = Callable[[str], None]


@dataclass
class Context:
    """What every stage needs: the plan, the output directory, how to load models, where to report."""

    plan: Plan
    out: Path
    options: LoadOptions
    say: Say
    protocol: Protocol | None = None  # pinned once, shared by every evaluation of the run

    def __post_init__(self) -> None:
        if self.protocol is None:
            self.protocol, _ = load_pinned(evaluation_protocol(self.plan))

    def load(self, source: str | Path) -> LoadedModel:
        torch.manual_seed(self.plan.seed)
        return load_model(str(source), self.options)


# ---------------------------------------------------------------------------------------------- data


def evaluation_protocol(plan: Plan) -> Protocol:
    """One protocol for every model: keyword ASR with and without the system prompt, over-refusal, perplexity.

    No response loss (its default set is the utility calibration set) and no lm-eval tasks.
    """
    return Protocol(
        harmful=DataRef(sets.HARMFUL_EVAL, plan.eval_samples),
        harmless=DataRef(sets.HARMLESS_EVAL, plan.eval_samples),
        benign_text=DataRef(sets.BENIGN_TEXT, plan.benign_text_limit),
        instructions=None,
        max_new_tokens=plan.max_new_tokens,
        batch_size=plan.eval_batch_size,
        zero_shot_tasks=(),
    )


def calibration_sets(plan: Plan) -> tuple[Dataset, Dataset]:
    safety = load_dataset(sets.SAFETY_SET, limit=plan.audit_samples, require_response=True)
    utility = load_dataset(sets.UTILITY_SET, limit=plan.audit_samples, require_response=True)
    return safety, utility


def _slice(dataset: Dataset, start: int, stop: int) -> Dataset:
    return Dataset(f"{dataset.name}[{start}:{stop}]", dataset.examples[start:stop])


def alignment_data(plan: Plan) -> Dataset:
    """Refusal pairs mixed with the first benign pairs (the trainer shuffles them together)."""
    refusals = load_dataset(sets.REFUSAL_SET, limit=plan.align_refusals, require_response=True)
    benign = _slice(load_dataset(sets.BENIGN_SET, require_response=True), 0, plan.align_benign)
    return Dataset(f"{refusals.name}+{benign.name}", refusals.examples + benign.examples)


def downstream_data(plan: Plan) -> Dataset:
    """Benign instruction pairs the alignment never saw: the part of benign_sft after the alignment slice."""
    benign = load_dataset(sets.BENIGN_SET, require_response=True)
    stop = plan.align_benign + plan.downstream_pairs
    if stop > len(benign):
        raise ValueError(f"{sets.BENIGN_SET} has {len(benign)} pairs; align_benign + downstream_pairs = {stop}")
    return _slice(benign, plan.align_benign, stop)


# ---------------------------------------------------------------------------------------------- helpers


def opening_refusal_rate(records: list[dict], openings) -> float | None:
    """Fraction of responses that begin with one of the protocol's refusal openings ("I can't", "Sorry", ...).

    The keyword lists miss refusals phrased "I can't help with that" (neither list has that string);
    this reads the same generated text with the openings the protocol already uses for the margin.
    """
    if not records:
        return None
    starts = [opens_with(record["response"], openings) for record in records]
    return sum(starts) / len(starts)


def metrics(evaluation: dict) -> dict:
    """The headline numbers of one evaluate() result (a pure function of evaluation.json)."""
    safety, utility = evaluation["safety"], evaluation["utility"]
    openings = evaluation["protocol"]["settings"]["refusal_openings"]
    return {
        "refusal_opening_harmful": opening_refusal_rate(evaluation["records"]["harmful"], openings),
        "refusal_opening_harmless": opening_refusal_rate(evaluation["records"]["harmless"], openings),
        "margin_refusal_harmless": safety["refusal_margin"]["harmless"]["predicted_refusal"],
        "asr": safety["asr"],
        "asr_system": safety["asr_system"],
        "asr_no_system": safety["asr_no_system"],
        "asr_advbench29": safety["asr_by_list"]["advbench-29"]["mean"],
        "over_refusal": safety["over_refusal"],
        "refusal_margin": safety["refusal_margin"]["mean"],
        "predicted_refusal": safety["refusal_margin"]["predicted_refusal"],
        "perplexity": utility["perplexity"],
        "eval_seconds": evaluation["timing"]["total_seconds"],
    }


def _evaluate(ctx: Context, loaded: LoadedModel, directory: Path, label: str) -> dict:
    started = time.perf_counter()
    result = evaluate(loaded, ctx.protocol)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "evaluation.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    numbers = metrics(result)
    ctx.say(
        f"  {label}: ASR {100 * numbers['asr']:.1f} %, over-refusal {100 * numbers['over_refusal']:.1f} %, "
        f"perplexity {numbers['perplexity']:.2f} ({time.perf_counter() - started:.0f}s)"
    )
    return numbers


def _finetune_config(plan: Plan, **changes) -> FinetuneConfig:
    return FinetuneConfig(
        batch_size=plan.batch_size,
        max_length=plan.max_length,
        max_steps=plan.max_steps,
        seed=plan.seed,
        warmup_ratio=0.05,
        **changes,
    )


def _train(ctx: Context, loaded, dataset, config, unit_map, directory: Path, label: str, **kwargs) -> dict:
    started = time.perf_counter()
    result = run_finetune(loaded, dataset, config, unit_map, directory, **kwargs)
    losses = [entry["loss"] for entry in result.history]
    # Under LoRA the trained entries are the adapter's (its update reaches RU's rows/columns only).
    trained = result.lora if result.lora is not None else result.masks
    summary = {
        "model": str(result.model_dir),
        "steps": result.steps,
        "data": {"name": dataset.name, "pairs": len(dataset), "sha256": dataset.sha256},
        "trainable_fraction": trained["trainable_fraction"],
        "frozen_unit_fraction": result.masks["frozen_unit_fraction"],
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    if result.lora is not None:
        summary["lora"] = result.lora
        summary["unit_trainable_fraction"] = result.masks["trainable_fraction"]  # the full-rank RU arm's share
    ctx.say(
        f"  {label}: {result.steps} steps, {100 * summary['trainable_fraction']:.1f} % of parameters trained, "
        f"loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} ({summary['train_seconds']:.0f}s)"
    )
    return summary


# ---------------------------------------------------------------------------------------------- stages


def baseline(ctx: Context) -> dict:
    """Stage 1: the pre-trained model as shipped."""
    loaded = ctx.load(ctx.plan.model)
    return {"model": ctx.plan.model, **_evaluate(ctx, loaded, ctx.out / "baseline", "base model")}


def alignment(ctx: Context) -> dict:
    """Stage 2: safety SFT, full fine-tuning vs training only the redundant units (the alignment budget)."""
    plan, data = ctx.plan, alignment_data(ctx.plan)
    _, utility = calibration_sets(plan)
    arms = {
        "full": _finetune_config(plan, mode="full", epochs=plan.align_epochs, lr=plan.align_lr),
        "budget": _finetune_config(
            plan,
            mode="budget",
            budget=plan.budget,
            budget_samples=plan.audit_samples,
            epochs=plan.align_epochs,
            lr=plan.align_lr,
        ),
    }
    if plan.lora_rank:  # the budget arm's data, RU (found the same way) and steps, through a LoRA adapter
        arms["lora_ru"] = replace(
            arms["budget"], lora_rank=plan.lora_rank, lr=plan.lora_lr if plan.lora_lr is not None else plan.align_lr
        )
    results = {}
    for arm, config in arms.items():
        directory = ctx.out / "alignment" / arm
        loaded = ctx.load(plan.model)
        trained = _train(ctx, loaded, data, config, None, directory, f"align ({arm})", utility=utility)
        results[arm] = {**trained, "config": config.to_dict(), **_evaluate(ctx, loaded, directory, f"aligned ({arm})")}
        del loaded
    return results


def audit(ctx: Context, aligned_model: str) -> dict:
    """Stage 3: the unit map of the aligned model: class shares and where each class sits by layer."""
    loaded = ctx.load(aligned_model)
    safety, utility = calibration_sets(ctx.plan)
    config = AuditConfig(samples=ctx.plan.audit_samples, batch_size=ctx.plan.audit_batch_size)
    started = time.perf_counter()
    unit_map = run_audit(loaded, safety, utility, config)
    directory = unit_map.save(ctx.out / "audit" / "unit_map")
    summary = unit_map.summary()
    classes = {
        name: {key: summary["classes"][name][key] for key in ("heads", "neurons", "unit_fraction", "param_fraction")}
        for name in CLASSES
    }
    layers = [
        {
            "layer": row["layer"],
            **{name: row["heads"][name] + row["neurons"][name] for name in CLASSES},
            "SCU_heads": row["heads"]["SCU"],
        }
        for row in summary["layers"]
    ]
    scu_by_layer = [row["SCU"] for row in layers]
    ctx.say("  classes: " + ", ".join(f"{name} {100 * classes[name]['unit_fraction']:.2f} %" for name in CLASSES))
    return {
        "unit_map": str(directory),
        "model": aligned_model,
        "classes": classes,
        "layers": layers,
        "scu_peak_layer": max(range(len(scu_by_layer)), key=scu_by_layer.__getitem__),
        "scu_thirds": _thirds(scu_by_layer),
        "audit_seconds": round(time.perf_counter() - started, 1),
    }


def _thirds(counts: list[int]) -> dict:
    """Share of a class in the first, middle and last third of the layers."""
    total, n = max(sum(counts), 1), len(counts)
    bounds = [0, n // 3, 2 * n // 3, n]
    names = ("early", "middle", "late")
    return {name: sum(counts[bounds[i] : bounds[i + 1]]) / total for i, name in enumerate(names)}


def ablation(ctx: Context, aligned_model: str, unit_map_dir: str, dense: dict) -> dict:
    """Stage 4 (the paper's Table 1): remove SCU, UCU or RU of the aligned model, and matched random units.

    Every prompt format x compensation of the plan is measured; the first of each gives the headline
    ``minus_<class>`` entries. Each arm carries its intervals and paired differences against the dense
    model in the same format; a random control is the mean (and range) of its seeds. Perplexity does not
    depend on the prompt format, so each arm's is measured in the first format and reused in the others.
    """
    plan = ctx.plan
    loaded = ctx.load(aligned_model)
    unit_map = UnitMap.load(unit_map_dir)
    results: dict = {"dense": {key: dense.get(key) for key in metrics_keys()}, "table1": []}
    measured: dict[tuple, dict] = {}  # (compensation, arm, seed) -> its first-format result, for its utility
    for number, prompt_format in enumerate(plan.prompt_formats):
        base = ctx.protocol.replace(prompt_format=prompt_format)
        directory = ctx.out / "ablation" / prompt_format
        dense_result = _evaluate_result(
            ctx, loaded, base, None, None, directory / "dense", f"dense ({prompt_format})", measured.get(("dense",))
        )
        measured.setdefault(("dense",), dense_result)
        results["table1"].append(_row(prompt_format, None, "dense", dense_result, None))
        for compensation in plan.compensations:
            protocol = base.replace(ablation_compensation=compensation)
            arms = [(f"minus {name}", [AblationSpec((name,))]) for name in ("SCU", "UCU", "RU")]
            arms += [
                (
                    f"random matched to {name}",
                    [AblationSpec((name,), control="random", seed=seed) for seed in plan.control_seeds],
                )
                for name in plan.controlled_classes
            ]
            for arm, specs in arms:
                evaluated = []
                for spec in specs:
                    key = (compensation, arm, spec.seed if spec.control else None)
                    result = _evaluate_result(
                        ctx,
                        loaded,
                        protocol,
                        spec,
                        unit_map,
                        directory
                        / compensation
                        / arm.replace(" ", "-")
                        / (f"seed-{spec.seed}" if spec.control else ""),
                        f"{arm} ({prompt_format}, {compensation})",
                        measured.get(key),
                    )
                    measured.setdefault(key, result)
                    evaluated.append(result)
                row = _row(prompt_format, compensation, arm, evaluated[0], dense_result, evaluated)
                results["table1"].append(row)
                if number == 0 and compensation == plan.compensations[0] and arm.startswith("minus "):
                    name = arm.removeprefix("minus ")
                    entry = metrics(evaluated[0])
                    entry["units"] = evaluated[0]["ablation"]["units"]
                    entry["unit_fraction"] = entry["units"] / unit_map.space.size
                    entry["delta_asr"] = entry["asr"] - dense["asr"]
                    entry["delta_perplexity"] = entry["perplexity"] - dense["perplexity"]
                    results[f"minus_{name}"] = entry
    return results


def _evaluate_result(
    ctx: Context,
    loaded: LoadedModel,
    protocol: Protocol,
    spec,
    unit_map,
    directory: Path,
    label: str,
    reuse_utility: dict | None = None,
) -> dict:
    """evaluate() under ``protocol`` (with ``spec`` ablated when given), saved as DIR/evaluation.json.

    An evaluation.json already there from the same plan and protocol is read back instead: the ablation
    stage is ~40 evaluations, and a run cut off in the middle resumes at the first one missing.
    """
    path = directory / "evaluation.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    if saved and saved.get("plan_hash") == ctx.plan.hash and saved["protocol"]["hash"] == protocol.hash:
        ctx.say(f"    {label}: ASR {100 * saved['safety']['asr']:.1f} % (read back from {path})")
        return saved
    started = time.perf_counter()
    result = evaluate(loaded, protocol, ablation=spec, unit_map=unit_map if spec else None, reuse_utility=reuse_utility)
    result["plan_hash"] = ctx.plan.hash  # the plan fixes the unit map and the seeds, hence what was ablated
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    ctx.say(
        f"    {label}: ASR {100 * result['safety']['asr']:.1f} %, perplexity "
        f"{result['utility']['perplexity']:.2f} ({time.perf_counter() - started:.0f}s)"
    )
    return result


# Table 1's numbers per arm: name -> a function of one evaluate() result.
TABLE1_VALUES = {
    "asr": lambda r: r["safety"]["asr"],
    "refusal_openings_harmful": lambda r: _mean_rate(r["safety"]["refusal_openings"]["harmful"]),
    "over_refusal": lambda r: r["safety"]["over_refusal"],
    "refusal_openings_harmless": lambda r: _mean_rate(r["safety"]["refusal_openings"]["harmless"]),
    "refusal_margin": lambda r: r["safety"]["refusal_margin"]["mean"],
    "perplexity": lambda r: r["utility"]["perplexity"],
}


def _mean_rate(per_condition: dict) -> float | None:
    rates = [entry["rate"] for entry in per_condition.values() if entry]
    return sum(rates) / len(rates) if rates else None


def _row(
    prompt_format: str,
    compensation: str | None,
    arm: str,
    result: dict,
    dense: dict | None,
    seeds: list[dict] | None = None,
) -> dict:
    """One Table 1 row: the values (mean and range over a control's seeds), intervals, and paired changes."""
    runs = seeds or [result]
    values = {}
    for name, read in TABLE1_VALUES.items():
        numbers = [read(run) for run in runs]
        numbers = [n for n in numbers if n is not None]
        values[name] = sum(numbers) / len(numbers) if numbers else None
        if len(runs) > 1 and numbers:
            values[f"{name}_range"] = [min(numbers), max(numbers)]
    safety = result["safety"]
    row = {
        "prompt_format": prompt_format,
        "compensation": compensation,
        "arm": arm,
        **values,
        "asr_by_condition": {c: v for c, v in safety["asr_by_list"][safety["refusal_list"]].items() if c != "mean"},
        "intervals": {
            "asr": safety["intervals"][safety["refusal_list"]]["asr"],
            "refusal_openings_harmful": safety["refusal_openings"]["harmful"],
            "over_refusal": safety["intervals"][safety["refusal_list"]]["over_refusal"],
        },
        "seeds": [run["ablation"]["seed"] for run in runs] if seeds and runs[0]["ablation"]["control"] else None,
    }
    if result.get("ablation"):
        row.update(
            units=result["ablation"]["units"],
            heads=result["ablation"]["heads"],
            neurons=result["ablation"]["neurons"],
            param_fraction=result["ablation"]["param_fraction"],
        )
    if dense is not None:
        row["paired_vs_dense"] = compare(dense, result)["differences"]  # first seed of a control
    return row


def metrics_keys() -> tuple[str, ...]:
    return (
        "asr",
        "asr_system",
        "asr_no_system",
        "asr_advbench29",
        "over_refusal",
        "refusal_opening_harmful",
        "refusal_opening_harmless",
        "refusal_margin",
        "predicted_refusal",
        "margin_refusal_harmless",
        "perplexity",
        "eval_seconds",
    )


def evaluated_entries(results: dict, out: Path) -> list[tuple[dict, Path]]:
    """Each summary entry of the results that stands for one evaluation.json, with that file."""
    entries = [(results["baseline"], out / "baseline")]
    entries += [(results["alignment"][arm], out / "alignment" / arm) for arm in results["alignment"]]
    if "ablation" in results:
        entries.append((results["ablation"]["dense"], out / ("alignment/full" if results["alignment"] else "baseline")))
        headline = out / "ablation" / results["plan"]["prompt_formats"][0] / results["plan"]["compensations"][0]
        entries += [(results["ablation"][f"minus_{name}"], headline / f"minus-{name}") for name in ("SCU", "UCU", "RU")]
    entries += [(entry, out / "downstream" / arm) for arm, entry in results.get("downstream", {}).items()]
    return [(entry, directory / "evaluation.json") for entry, directory in entries]


def refresh_metrics(results: dict, out: Path) -> None:
    """Recompute every entry's metrics from its saved evaluation.json (a new metric needs no rerun)."""
    for entry, path in evaluated_entries(results, out):
        entry.update(metrics(json.loads(path.read_text())))


def downstream_arms(plan: Plan) -> dict[str, FinetuneConfig]:
    """The fine-tune settings of stage 5's arms; the schedule (equal epochs or the paper's) is in each config."""
    common = {
        "epochs": plan.downstream_epochs,
        "lr": plan.downstream_lr,
        "reaudit": True,
        "paper_schedule": plan.paper_schedule,
    }
    return {
        "full": _finetune_config(plan, mode="full", **common),
        "freeze_i": _finetune_config(plan, mode="freeze", setting="i", cu_top=plan.cu_top, **common),
        "freeze_ii": _finetune_config(plan, mode="freeze", setting="ii", **common),
    }


def downstream(ctx: Context, aligned_model: str, unit_map_dir: str) -> dict:
    """Stage 5 (the paper's Table 2): benign fine-tuning of the aligned model, full vs freeze (i) vs (ii)."""
    plan, data = ctx.plan, downstream_data(ctx.plan)
    unit_map = UnitMap.load(unit_map_dir)
    audit_sets = calibration_sets(plan)
    results = {}
    for arm, config in downstream_arms(plan).items():
        directory = ctx.out / "downstream" / arm
        loaded = ctx.load(aligned_model)
        trained = _train(ctx, loaded, data, config, unit_map, directory, f"fine-tune ({arm})", audit_sets=audit_sets)
        transfer = json.loads((directory / "role_transfer.json").read_text())
        results[arm] = {
            **trained,
            "config": config.to_dict(),
            **_evaluate(ctx, loaded, directory, f"after fine-tune ({arm})"),
            "role_transfer": _transfer_summary(transfer),
        }
        del loaded
    return results


def _transfer_summary(transfer: dict) -> dict:
    """Where the aligned model's SCU went, and the class shares before and after."""
    index = {name: i for i, name in enumerate(transfer["classes"])}
    scu_row = transfer["row_fractions"][index["SCU"]]
    return {
        "scu_to": {name: scu_row[index[name]] for name in transfer["classes"]},
        "before": transfer["before"],
        "after": transfer["after"],
        "unchanged_fraction": transfer["unchanged_fraction"],
        "counts": transfer["counts"],
        "classes": transfer["classes"],
    }

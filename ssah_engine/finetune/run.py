"""Fine-tune a model with some units frozen: the one entry point the CLI and the worker call.

A job reads top to bottom: choose the frozen units, build the masks, evaluate before, train,
save the model and the run's record, evaluate after, re-audit and cross-tabulate the roles.

Output directory::

    model/                    save_pretrained weights (safetensors) and tokenizer
    finetune_config.json      config, model, data hash, mask summary, library versions
    masks.safetensors         frozen units, KV groups, frozen rows/columns per tensor
    loss.json                 loss and learning rate per optimizer step (+ tracked refusal margins)
    refusal_track.json        with track_refusal: the prompts tracked, the step-0 margins, the stop reason
    budget_units/             budget mode without a unit map: the utility-only unit map used
    adapter/                  with lora_rank: the PEFT adapter (model/ holds it merged)
    evaluation.json           before/after scores (with evaluate)
    unit_map_after/, role_transfer.json   (with reaudit)
    checkpoints/step-N/       resumable state (with checkpoint_every)

Data-parallel (``shard``, the process's place among ``torch.distributed`` ranks; ``ssah finetune``
under torchrun): every rank calls ``run_finetune`` with the same arguments and trains its share of
each step (distributed.py, or fsdp.py with ``fsdp``); rank 0 alone writes the directory above and
runs the evaluations and the re-audit, every rank resumes from its checkpoints (so ``out_dir`` must
be one directory all ranks see).
"""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..architectures import describe
from ..data import Dataset
from ..loading import LoadedModel
from ..unitmap import UnitMap, library_versions
from ..units import UnitSpace
from .batches import StepBatches
from .checkpoint import latest_checkpoint
from .config import FinetuneConfig
from .distributed import Shard
from .masks import MASKS_FILE, build_masks
from .schedule import paper_phases
from .selection import find_redundant_units, frozen_units_for
from .tracking import TRACK_FILE, RefusalTracker
from .trainer import ProgressFn, train

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
LOSS_FILE = "loss.json"
EVALUATION_FILE = "evaluation.json"
TRANSFER_FILE = "role_transfer.json"
EvaluateFn = Callable[[LoadedModel], dict]


@dataclass
class FinetuneResult:
    out_dir: Path
    model_dir: Path
    steps: int
    history: list[dict]  # {"step", "loss", "lr"} per optimizer step
    masks: dict  # ParamMasks.summary()
    evaluation: dict = field(default_factory=dict)  # {"before": ..., "after": ...} with evaluate
    transfer: dict | None = None  # role_transfer(before, after) with reaudit
    schedule: dict = field(default_factory=dict)  # which schedule ran: "equal" epochs or "paper", its phases
    tracking: dict | None = None  # with track_refusal: sets, step-0 margins, stop (None: ran to the end)
    lora: dict | None = None  # with lora_rank: rank, alpha, adapter size (lora.lora_summary)
    adapter_dir: Path | None = None  # with lora_rank: the PEFT adapter directory


def _default_evaluate(config: FinetuneConfig) -> EvaluateFn:
    """``evaluation.evaluate`` under one protocol, its datasets pinned once so before and after match."""
    from ..evaluation import Protocol, evaluate, load_pinned

    protocol = Protocol.load(config.eval_protocol) if config.eval_protocol else Protocol()
    pinned, _ = load_pinned(protocol)
    return lambda loaded: evaluate(loaded, pinned)


def _audit_sets(unit_map: UnitMap) -> tuple[Dataset, Dataset]:
    """The safety and utility sets the unit map was built from, checked against its hashes."""
    from ..data import load_dataset

    sets = []
    for name in ("safety", "utility"):
        entry = unit_map.data.get(name)
        if not entry:
            raise ValueError(f"the unit map records no {name} set; pass audit_sets to re-audit")
        dataset, samples = load_dataset(entry["name"], require_response=True), unit_map.config.get("samples")
        # The audit's own draw: a seeded shuffle, or the first N (maps written before sampling existed).
        if entry.get("sampling", "first") == "shuffle":
            subset = dataset.sample(samples, entry.get("seed") or 0)
        else:
            subset = dataset.take(samples)
        if subset.sha256 != entry["sha256"]:
            raise ValueError(f"{entry['name']} changed since the audit (sha256 differs); pass audit_sets")
        sets.append(subset)
    return sets[0], sets[1]


def _check_resume(out_dir: Path, record: dict, config: FinetuneConfig) -> None:
    """Refuse to resume another run's checkpoints, or to overwrite them without resume."""
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return
    if not config.resume:
        raise ValueError(f"{out_dir} holds checkpoints of a run; resume it or choose another output dir")
    saved = json.loads((out_dir / CONFIG_FILE).read_text())
    record = json.loads(json.dumps(record))  # tuples as lists, as they were saved
    differs = [
        key
        for key in record["config"]
        if key not in FinetuneConfig.RESUME_FREE and saved["config"].get(key) != record["config"][key]
    ]
    if differs or saved["data"] != record["data"]:
        raise ValueError(f"cannot resume {out_dir}: settings differ ({', '.join(differs) or 'data'})")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def run_finetune(
    loaded: LoadedModel,
    dataset: Dataset,
    config: FinetuneConfig,
    unit_map: UnitMap | None,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    *,
    frozen_units: torch.Tensor | None = None,
    utility: Dataset | None = None,
    audit_sets: tuple[Dataset, Dataset] | None = None,
    evaluate_fn: EvaluateFn | None = None,
    track_sets: tuple[Dataset, Dataset] | None = None,
    shard: Shard | None = None,
    fsdp: bool = False,
) -> FinetuneResult:
    """Fine-tune ``loaded.model`` in place on ``dataset`` and write everything into ``out_dir``.

    ``frozen_units`` (bool [units]) overrides the unit map's classes with any unit set.
    ``utility`` finds the redundant units in budget mode when no unit map is given.
    ``audit_sets`` (safety, utility) re-audit; by default the sets named in the unit map.
    ``evaluate_fn(loaded) -> dict`` scores before/after; by default ``evaluation.evaluate``.
    ``track_sets`` (harmful, harmless) for track_refusal; by default the sets the config names.
    ``shard``: this process's rank in an initialised process group (``Shard.current()``); every rank
    calls with the same arguments, rank 0 alone writes ``out_dir``. ``fsdp``: shard the weights
    (FSDP2, ``train_fsdp``) instead of replicating them; needs ``shard``.
    """
    out_dir = Path(out_dir)
    main = shard is None or shard.main
    if fsdp:
        if shard is None:
            raise ValueError("fsdp needs a process group of more than one rank (run under torchrun)")
        check_fsdp(config)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    if config.evaluate and evaluate_fn is None and main:  # rank 0 alone evaluates
        evaluate_fn = _default_evaluate(config)
    if config.reaudit and (unit_map is None or unit_map.z_safety is None):
        raise ValueError("reaudit needs the unit map of a full audit (safety and utility) to compare against")
    if config.reaudit and audit_sets is None:
        audit_sets = _audit_sets(typing.cast(UnitMap, unit_map))  # checked just above
    mixed = _mix_set(config)
    if mixed is not None:
        dataset = Dataset(f"{dataset.name}+{mixed.name}[{len(mixed)}]", dataset.examples + mixed.examples)
    data = StepBatches(tokenizer, dataset, config)

    custom_unit_set = frozen_units is not None
    if frozen_units is None:
        if config.mode == "budget" and unit_map is None:
            if utility is None:
                raise ValueError("budget mode needs a unit map with RU or a utility set to find them")
            unit_map = find_redundant_units(loaded, utility, config)  # on every rank: the same units
            if main:
                unit_map.save(out_dir / "budget_units")
        frozen_units = frozen_units_for(config, space, unit_map)

    def masks_for(units: torch.Tensor):
        return build_masks(
            model,
            units,
            freeze_layers=config.layers_frozen,
            train_embeddings=config.trains("embeddings"),
            train_norms=config.trains("norms"),
            train_lm_head=config.trains("lm_head"),
            layout=layout,
            rule=config.freeze_rule,
        )

    masks = masks_for(frozen_units)
    if config.paper_schedule and custom_unit_set:
        raise ValueError("paper_schedule derives its phases from the unit map's settings, not from frozen_units")
    phases, schedule = paper_phases(
        config,
        data,
        masks,
        lambda setting: masks_for(frozen_units_for(replace(config, setting=setting), space, unit_map)),
        model,
        space,
    )
    tracker = None
    if config.track_refusal:
        harmful, harmless = track_sets or _track_sets(config)
        tracker = RefusalTracker(tokenizer, harmful, harmless, config)
    mask_summary = masks.summary(model, space)  # of the base model's tensors, before an adapter wraps them
    trained_model, trained_masks, lora = model, masks, None
    if config.lora_rank:
        from .lora import lora_summary, lora_targets, wrap_model

        targets = lora_targets(model, masks, layout)
        trained_model, trained_masks = wrap_model(model, targets, config, loaded.source)
        phases = [(0, trained_masks)]
        lora = lora_summary(trained_model, trained_masks, targets, config)
    record = {
        "config": config.to_dict(),
        "model": {"source": loaded.source, "resolved": loaded.resolved, "family": layout.family},
        "data": {
            "name": dataset.name,
            "sha256": dataset.sha256,
            "pairs": len(data.encoded),
            "mixed": {"name": mixed.name, "sha256": mixed.sha256, "pairs": len(mixed)} if mixed else None,
        },
        "unit_map": {"model": unit_map.model, "data": unit_map.data, "config": unit_map.config} if unit_map else None,
        "custom_unit_set": custom_unit_set,
        "masks": mask_summary,
        "lora": lora,
        "steps": data.total_steps,
        "schedule": schedule,
        "tracking": tracker.describe() if tracker else None,
        "versions": library_versions(),
        "distributed": {"world": shard.world, "fsdp": fsdp} if shard is not None else None,
    }
    _check_resume(out_dir, record, config)
    if shard is not None:
        shard.barrier()  # every rank has read the saved record before rank 0 rewrites it
    if main:
        masks.save(out_dir / MASKS_FILE)
        _write_json(out_dir / CONFIG_FILE, record)
    logger.info("trainable: %.2f %% of parameters", 100 * record["masks"]["trainable_fraction"])

    evaluation = {}
    evaluation_path = out_dir / EVALUATION_FILE
    if evaluate_fn is not None and main:  # the other ranks wait for rank 0 in their first collective
        if config.resume and evaluation_path.is_file():
            evaluation = json.loads(evaluation_path.read_text())  # "before" was measured on the base model
        if "before" not in evaluation:
            evaluation = {"protocol": config.eval_protocol, "before": evaluate_fn(loaded)}
            _write_json(evaluation_path, evaluation)

    tracking = None
    if tracker is not None:
        track_path = out_dir / TRACK_FILE
        saved = json.loads(track_path.read_text()) if config.resume and track_path.is_file() else {}
        # Step 0 is measured on the base model; a resumed run keeps the first run's measurement.
        tracking = {
            **tracker.describe(),
            "baseline": saved.get("baseline") or {"step": 0, **tracker.measure(model)},
            "stop": None,
        }
        if main:
            _write_json(track_path, tracking)
    fsdp_state = None
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        from .fsdp import full_state, train_fsdp

        assert shard is not None  # checked at the top
        device = next(model.parameters()).device
        mesh = init_device_mesh(device.type, (shard.world,))
        history = train_fsdp(model, data, masks, config, shard, mesh)
        fsdp_state = full_state(model)  # a collective; ``model`` stays sharded, rank 0 saves the gathered weights
    else:
        history = train(
            trained_model, data, trained_masks, config, out_dir, progress, phases=phases, tracker=tracker, shard=shard
        )
    model_dir = out_dir / "model"
    if not main:
        return FinetuneResult(
            out_dir, model_dir, len(history), history, record["masks"], {}, None, schedule, None, lora
        )
    adapter_dir = None
    if lora is not None:
        from .lora import save_adapter

        adapter_dir = save_adapter(trained_model, out_dir)
        # Merged in place: ``model`` (and ``loaded.model``) hold W + B A with plain linears again.
        trained_model.merge_and_unload()  # type: ignore[operator]  # a PeftModel's method
    # type: ignore: a transformers model's method (nn.Module's __getattr__ types it as a Tensor).
    model.save_pretrained(model_dir, state_dict=fsdp_state)  # type: ignore[operator]
    tokenizer.save_pretrained(model_dir)
    _write_card(model_dir, loaded.source, unit_map, record, evaluation)
    _write_json(out_dir / LOSS_FILE, history)
    if tracker is not None:
        assert tracking is not None  # set above whenever there is a tracker
        tracking["stop"] = tracker.stop
        _write_json(out_dir / TRACK_FILE, tracking)
        if tracker.stop:
            logger.info(
                "stopped at step %d: refusal margin %.3f below %.3f",
                tracker.stop["step"],
                tracker.stop["refusal_margin"],
                tracker.stop["threshold"],
            )

    if evaluate_fn is not None:
        evaluation["after"] = evaluate_fn(loaded)
        _write_json(evaluation_path, evaluation)
        _write_card(model_dir, loaded.source, unit_map, record, evaluation)  # now with the results
    transfer = None
    if config.reaudit:
        from ..audit import AuditConfig, run_audit
        from ..classes import Cuts
        from ..transfer import role_transfer

        assert unit_map is not None and audit_sets is not None  # reaudit: checked and set above
        saved = dict(unit_map.config)
        # A unit map from before seeded sampling drew the first N pairs: re-audit it the same way.
        audit_config = AuditConfig(**{"sampling": "first", **saved, "cuts": Cuts(**saved.get("cuts", {}))})
        after = run_audit(loaded, audit_sets[0], audit_sets[1], audit_config)
        after.save(out_dir / "unit_map_after")
        transfer = role_transfer(unit_map, after)
        _write_json(out_dir / TRANSFER_FILE, transfer)
    return FinetuneResult(
        out_dir,
        model_dir,
        len(history),
        history,
        record["masks"],
        evaluation,
        transfer,
        schedule,
        tracking,
        lora,
        adapter_dir,
    )


def check_fsdp(config: FinetuneConfig) -> None:
    """Raise ValueError for the settings the FSDP path refuses: train_fsdp's, and what needs the unsharded
    model after training (the CLI asks before it loads the model)."""
    from .fsdp import check_fsdp_config

    check_fsdp_config(config)
    refused = {
        "evaluate": config.evaluate,
        "reaudit": config.reaudit,
        "track_refusal": config.track_refusal,
        "lora_rank": bool(config.lora_rank),
        "paper_schedule": config.paper_schedule,
    }
    if any(refused.values()):
        raise ValueError(
            "the FSDP path trains one set of masks and saves the model only; unset "
            + ", ".join(name for name, value in refused.items() if value)
        )


def _write_card(model_dir: Path, source: str, unit_map: UnitMap | None, record: dict, evaluation: dict) -> None:
    from ..model_card import write_model_card

    config = record["config"]
    write_model_card(
        model_dir,
        kind="finetuned",
        source=source,
        unit_map=unit_map,
        masks={
            "mode": config.get("mode"),
            "setting": config.get("setting"),
            **record["masks"],
            **({"lora": record["lora"]} if record.get("lora") else {}),  # the units' rows/columns via an adapter
        },
        data=record["data"],
        results=evaluation or None,
    )


def _track_sets(config: FinetuneConfig) -> tuple[Dataset, Dataset]:
    from ..data import load_dataset

    return load_dataset(config.track_harmful), load_dataset(config.track_harmless)


def _mix_set(config: FinetuneConfig) -> Dataset | None:
    """``mix_pairs`` pairs of ``mix_data``, drawn with the run's seed (None when nothing is mixed)."""
    if not config.mix_pairs:
        return None
    from ..data import load_dataset

    mixed = load_dataset(typing.cast(str, config.mix_data), require_response=True)  # set with mix_pairs
    if len(mixed) < config.mix_pairs:
        raise ValueError(f"mix_data {config.mix_data} has {len(mixed)} pairs, fewer than mix_pairs={config.mix_pairs}")
    return mixed.sample(config.mix_pairs, config.seed)

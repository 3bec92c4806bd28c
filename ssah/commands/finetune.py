"""`ssah finetune`: supervised fine-tuning with safety units frozen, or only redundant units trained."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from ssah_engine.finetune import FinetuneConfig

from .common import CommandError, ProgressBar, add_model_arguments, load_data, load_model_from_args, run_guarded
from .config_flags import add_config_flags, config_values

DEFAULT_UTILITY = "builtin:utility"
# Rank 0 evaluates before training while the others wait in their first collective; nccl's default
# timeout (10 min) would end the run on a 7B model's evaluation.
PROCESS_GROUP_TIMEOUT = timedelta(hours=3)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune with unit masks: freeze SCU (+CU), or train only RU",
        description=(
            "Fine-tune on (prompt, response) pairs with the loss on responses only. "
            "full: train everything; freeze: keep SCU and part of CU (setting i) or all CU (setting ii) "
            "bit-identical; budget: train only the redundant units. Writes the model, masks, config, loss curve. "
            "Under torchrun (WORLD_SIZE > 1) the ranks share each step's micro-batches: "
            "torchrun --nproc_per_node N -m ssah.cli finetune ..."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="training pairs: .jsonl, Alpaca/Dolly .json, builtin:NAME")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    parser.add_argument("--units", type=Path, help="unit map directory from `ssah audit` (freeze, budget)")
    parser.add_argument("--utility-data", default=DEFAULT_UTILITY, help="budget without --units: set that finds RU")
    # Every setting of the run: flags, defaults, choices and help come from FinetuneConfig's fields.
    names = add_config_flags(
        parser,
        FinetuneConfig,
        help_overrides={
            "stop_if_refusal_below": "stop when the mean tracked refusal margin falls below this (implies --track-refusal)",
        },
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard the weights over the ranks (FSDP2) instead of replicating them; "
        "no checkpoints, evaluation, re-audit, tracking, LoRA or paper schedule",
    )
    parser.set_defaults(run=lambda args: run_guarded(run, args), config_fields=names)


def _headline(evaluation: dict) -> str:
    """A one-line read-out of an evaluate() result: its top-level numbers, nested one level."""
    parts = []
    for section in ("safety", "utility"):
        for key, value in (evaluation.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append(f"{section}.{key}={value:.4g}")
    return ", ".join(parts) or "see evaluation.json"


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The run's FinetuneConfig from the parsed flags (the API derives the same config from a request body)."""
    values = config_values(args, args.config_fields)
    values["track_refusal"] = values["track_refusal"] or values["stop_if_refusal_below"] is not None
    try:
        return FinetuneConfig.from_dict(values)
    except ValueError as error:
        raise CommandError(str(error)) from None


def start_process_group(args: argparse.Namespace, config: FinetuneConfig):
    """Under torchrun (WORLD_SIZE > 1): join the default process group and return this rank's ``Shard``.

    gloo on CPU, nccl on CUDA with one GPU per rank (cuda:LOCAL_RANK). None for a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.fsdp:
        from ssah_engine.finetune.run import check_fsdp

        check_fsdp(config)  # before a process group and a model: the settings FSDP refuses
    if world <= 1:
        if args.fsdp:
            raise CommandError("--fsdp shards over ranks: run under torchrun with more than one process")
        return None
    import torch
    import torch.distributed as dist

    from ssah_engine.finetune.distributed import Shard

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if device != "cuda":
            raise CommandError(f"under torchrun each rank trains on cuda:LOCAL_RANK; pass --device cuda, not {device}")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device, backend = f"cuda:{local}", "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise CommandError(f"data-parallel fine-tuning runs on cpu (gloo) or cuda (nccl), not {device}")
    dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
    shard = Shard.current()
    assert shard is not None  # a world of more than one
    if not shard.main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs and prints for the run
    logging.getLogger(__name__).info(
        "data-parallel over %d ranks (%s%s)", shard.world, backend, ", FSDP" if args.fsdp else ""
    )
    return shard


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    shard = start_process_group(args, config)
    if shard is None:
        return _run(args, config, None)
    import torch.distributed as dist

    try:
        return _run(args, config, shard)
    finally:
        dist.destroy_process_group()


def _run(args: argparse.Namespace, config: FinetuneConfig, shard) -> int:
    from ssah_engine.finetune import run_finetune
    from ssah_engine.unitmap import UnitMap

    if args.mode == "freeze" and args.units is None:
        raise CommandError("--mode freeze needs --units (a unit map from `ssah audit`)")
    unit_map = UnitMap.load(args.units) if args.units else None
    dataset = load_data(args.data, limit=args.limit, require_response=True)
    utility = None
    if args.mode == "budget" and unit_map is None:
        utility = load_data(args.utility_data, require_response=True)
    if args.dtype is None:
        args.dtype = "float32"  # AdamW keeps float32 master weights; CUDA runs bf16 through autocast
    loaded = load_model_from_args(args)
    main = shard is None or shard.main
    bar = ProgressBar("finetune") if main else None
    try:
        result = run_finetune(
            loaded, dataset, config, unit_map, args.out, progress=bar, utility=utility, shard=shard, fsdp=args.fsdp
        )
    finally:
        if bar is not None:
            bar.close()
    if not main:
        return 0  # rank 0 prints the run's summary
    losses = [entry["loss"] for entry in result.history]
    masks = result.masks
    print(
        ("the adapter may change " if result.lora is not None else "trained ")
        + f"{masks['trainable_parameters']:,} of {masks['parameters']:,} parameters "
        f"({100 * masks['trainable_fraction']:.2f} %); frozen units {masks['frozen_units']} "
        f"({100 * masks['frozen_unit_fraction']:.2f} % of units)"
    )
    if result.lora is not None:
        lora = result.lora
        print(
            f"LoRA rank {lora['rank']} (alpha {lora['alpha']:g}) on {lora['targets']} projections: "
            f"{lora['trainable_parameters']:,} adapter entries trained "
            f"({100 * lora['trainable_fraction']:.2f} % of the model's parameters); adapter {result.adapter_dir}"
        )
    if shard is not None:
        print(f"data-parallel over {shard.world} ranks" + (" with sharded weights (FSDP)" if args.fsdp else ""))
    if losses:
        print(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}, min {min(losses):.4f} over {len(losses)} steps")
    beyond = masks.get("frozen_beyond_rows_rule", {}).get("parameters", 0)
    if beyond:
        print(
            f"freeze rule {masks['freeze_rule']}: {beyond:,} parameters frozen beyond the rows rule "
            f"(k/v rows {masks['frozen_beyond_rows_rule']['kv_rows']:,}, norms {masks['frozen_beyond_rows_rule']['norms']:,})"
        )
    if result.schedule.get("name") == "paper":
        phases = ", ".join(
            f"setting {p['setting']} steps {p['first_step']}-{p['last_step']}" for p in result.schedule["phases"]
        )
        print(f"paper schedule ({result.schedule['arm']} arm): {phases or 'plain'}")
    if result.tracking:
        tracked = [entry for entry in result.history if "refusal_margin" in entry]
        base = result.tracking["baseline"]
        last = tracked[-1] if tracked else base
        print(
            f"refusal margin: step 0 {base['refusal_margin']:.3f} -> step {last['step']} {last['refusal_margin']:.3f}; "
            f"over-refusal margin {base['over_refusal_margin']:.3f} -> {last['over_refusal_margin']:.3f}"
        )
        if result.tracking["stop"]:
            stop = result.tracking["stop"]
            print(
                f"stopped at step {stop['step']}: refusal margin {stop['refusal_margin']:.3f} "
                f"below {stop['threshold']:.3f}"
            )
    for stage in ("before", "after"):
        if stage in result.evaluation:
            print(f"evaluation {stage}: {_headline(result.evaluation[stage])}")
    if result.transfer:
        print(f"role transfer: {100 * result.transfer['unchanged_fraction']:.2f} % of units kept their class")
    print(f"model in {result.model_dir}")
    sys.stdout.flush()
    return 0

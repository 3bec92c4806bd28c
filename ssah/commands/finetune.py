"""`ssah finetune`: supervised fine-tuning with safety units frozen, or only redundant units trained."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import CommandError, ProgressBar, add_model_arguments, load_data, load_model_from_args, run_guarded

DEFAULT_UTILITY = "builtin:utility"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune with unit masks: freeze SCU (+CU), or train only RU",
        description=(
            "Fine-tune on (prompt, response) pairs with the loss on responses only. "
            "full: train everything; freeze: keep SCU and part of CU (setting i) or all CU (setting ii) "
            "bit-identical; budget: train only the redundant units. Writes the model, masks, config, loss curve."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="training pairs: .jsonl, Alpaca/Dolly .json, builtin:NAME")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    parser.add_argument("--mode", choices=("full", "freeze", "budget"), default="full")
    parser.add_argument("--units", type=Path, help="unit map directory from `ssah audit` (freeze, budget)")
    parser.add_argument("--setting", choices=("i", "ii"), help="freeze: i = SCU + top CU by z_S (default), ii = SCU + CU")
    parser.add_argument("--freeze-classes", help="freeze: comma-separated classes instead of a setting, e.g. SCU,UCU")
    parser.add_argument("--cu-top", type=float, default=0.06, help="setting i: parameter fraction of CU frozen")
    parser.add_argument("--cu-top-of", choices=("model", "cu"), default="model",
                        help="--cu-top is a fraction of all unit parameters or of CU's")
    parser.add_argument("--budget", type=float, default=0.20, help="budget: parameter fraction of RU to train")
    parser.add_argument("--utility-data", default=DEFAULT_UTILITY, help="budget without --units: set that finds RU")
    parser.add_argument("--freeze-layers", default="", help="freeze whole layers, e.g. 0-5,10")
    parser.add_argument("--freeze-rule", choices=("function", "rows"), default="function",
                        help="function (default): a frozen head also freezes its KV group's k/v rows and the norms "
                             "it passes through, so its output is bit-identical; rows: the older rule (k/v only "
                             "when the whole group is frozen, norms train)")
    parser.add_argument("--paper-schedule", action="store_true",
                        help="the paper's schedule: freeze settings train twice the epochs (or --max-steps), "
                             "setting i after one epoch of setting ii; full mode is the plain arm")
    for part in ("embeddings", "norms", "lm-head"):
        parser.add_argument(f"--train-{part}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"train the {part} (default: yes, except in budget mode)")
    parser.add_argument("--mix-data", default=None, help="pairs mixed into --data, e.g. builtin:align_refusal")
    parser.add_argument("--mix-pairs", type=int, default=0, help="how many pairs of --mix-data to add (seeded draw)")
    parser.add_argument("--anchor", type=float, default=0.0,
                        help="decoupled L2 pull toward the starting weights: w -= lr * ANCHOR * (w - w_start)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine")
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="CUDA only")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="resumable checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--track-refusal", action="store_true",
                        help="refusal margin on harmful calibration prompts and over-refusal margin on harmless "
                             "ones every --track-every steps (no generation), stored in loss.json")
    parser.add_argument("--track-every", type=int, default=10, help="steps between two tracked margins")
    parser.add_argument("--track-prompts", type=int, default=8, help="prompts of each tracking set")
    parser.add_argument("--track-harmful", default="builtin:safety", help="harmful calibration prompts tracked")
    parser.add_argument("--track-harmless", default="builtin:utility", help="harmless prompts tracked")
    parser.add_argument("--stop-if-refusal-below", type=float, default=None, metavar="MARGIN",
                        help="stop when the mean tracked refusal margin falls below MARGIN (implies --track-refusal)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate safety and utility before and after")
    parser.add_argument("--eval-protocol", default=None, help="protocol JSON for --evaluate (default protocol if absent)")
    parser.add_argument("--reaudit", action="store_true", help="re-audit the result and write the role transfer")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def _headline(evaluation: dict) -> str:
    """A one-line read-out of an evaluate() result: its top-level numbers, nested one level."""
    parts = []
    for section in ("safety", "utility"):
        for key, value in (evaluation.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append(f"{section}.{key}={value:.4g}")
    return ", ".join(parts) or "see evaluation.json"


def run(args: argparse.Namespace) -> int:
    from ssah_engine.finetune import FinetuneConfig, run_finetune
    from ssah_engine.unitmap import UnitMap

    classes = tuple(filter(None, (args.freeze_classes or "").split(",")))
    setting = args.setting or ("i" if args.mode == "freeze" and not classes else None)
    config = FinetuneConfig(
        mode=args.mode, setting=setting, freeze_classes=classes, cu_top=args.cu_top, cu_top_of=args.cu_top_of,
        budget=args.budget, freeze_layers=args.freeze_layers, train_embeddings=args.train_embeddings,
        train_norms=args.train_norms, train_lm_head=args.train_lm_head, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, schedule=args.schedule,
        max_length=args.max_length, system_prompt=args.system_prompt, seed=args.seed, bf16=not args.no_bf16,
        gradient_checkpointing=args.gradient_checkpointing, checkpoint_every=args.checkpoint_every,
        resume=args.resume, evaluate=args.evaluate, eval_protocol=args.eval_protocol, reaudit=args.reaudit,
        freeze_rule=args.freeze_rule, paper_schedule=args.paper_schedule,
        track_refusal=args.track_refusal or args.stop_if_refusal_below is not None, track_every=args.track_every,
        track_prompts=args.track_prompts, track_harmful=args.track_harmful, track_harmless=args.track_harmless,
        stop_if_refusal_below=args.stop_if_refusal_below, mix_data=args.mix_data, mix_pairs=args.mix_pairs,
        anchor=args.anchor,
    )
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
    bar = ProgressBar("finetune")
    try:
        result = run_finetune(loaded, dataset, config, unit_map, args.out, progress=bar, utility=utility)
    finally:
        bar.close()
    losses = [entry["loss"] for entry in result.history]
    masks = result.masks
    print(f"trained {masks['trainable_parameters']:,} of {masks['parameters']:,} parameters "
          f"({100 * masks['trainable_fraction']:.2f} %); frozen units {masks['frozen_units']} "
          f"({100 * masks['frozen_unit_fraction']:.2f} % of units)")
    if losses:
        print(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}, min {min(losses):.4f} over {len(losses)} steps")
    beyond = masks.get("frozen_beyond_rows_rule", {}).get("parameters", 0)
    if beyond:
        print(f"freeze rule {masks['freeze_rule']}: {beyond:,} parameters frozen beyond the rows rule "
              f"(k/v rows {masks['frozen_beyond_rows_rule']['kv_rows']:,}, norms {masks['frozen_beyond_rows_rule']['norms']:,})")
    if result.schedule.get("name") == "paper":
        phases = ", ".join(f"setting {p['setting']} steps {p['first_step']}-{p['last_step']}"
                           for p in result.schedule["phases"])
        print(f"paper schedule ({result.schedule['arm']} arm): {phases or 'plain'}")
    if result.tracking:
        tracked = [entry for entry in result.history if "refusal_margin" in entry]
        base = result.tracking["baseline"]
        last = tracked[-1] if tracked else base
        print(f"refusal margin: step 0 {base['refusal_margin']:.3f} -> step {last['step']} {last['refusal_margin']:.3f}; "
              f"over-refusal margin {base['over_refusal_margin']:.3f} -> {last['over_refusal_margin']:.3f}")
        if result.tracking["stop"]:
            stop = result.tracking["stop"]
            print(f"stopped at step {stop['step']}: refusal margin {stop['refusal_margin']:.3f} "
                  f"below {stop['threshold']:.3f}")
    for stage in ("before", "after"):
        if stage in result.evaluation:
            print(f"evaluation {stage}: {_headline(result.evaluation[stage])}")
    if result.transfer:
        print(f"role transfer: {100 * result.transfer['unchanged_fraction']:.2f} % of units kept their class")
    print(f"model in {result.model_dir}")
    sys.stdout.flush()
    return 0

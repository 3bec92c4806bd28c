"""`ssah reproduce`: baseline, alignment, audit, ablation and downstream fine-tuning of one model, in one run."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .common import run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's arc on a model: baseline, alignment, audit, ablation, downstream fine-tuning",
        description=(
            "1 baseline ASR/over-refusal/perplexity; 2 safety SFT, full vs redundant units only; 3 audit of the "
            "aligned model; 4 ablation of its SCU, UCU, RU (paper's Table 1); 5 benign fine-tuning, full vs freeze "
            "setting (i) vs (ii), with role transfer (paper's Table 2). Writes DIR/results.json, DIR/results.md "
            "and every trained model. A rerun with the same settings skips finished stages."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--quick", action="store_true", help="smoke preset: a few prompts and steps per stage")
    parser.add_argument("--model", default=None, help="model to align (default builtin:smollm2)")
    parser.add_argument(
        "--aligned-as-shipped",
        action="store_true",
        help="the model is already safety-aligned: skip stage 2 (default for aligned builtins)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="weights dtype (default float32: training keeps float32 master weights; bf16 autocast on CUDA)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    parser.add_argument("--samples", type=int, default=None, help="harmful and harmless evaluation prompts")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="new tokens per response")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--formats", help="Table 1 prompt formats, comma list of chat,no_inst,raw (default chat,no_inst)"
    )
    parser.add_argument(
        "--compensations", help="Table 1 compensations, comma list of none,safety,utility,pooled (default none,safety)"
    )
    parser.add_argument("--control-seeds", help="seeds of each matched random control, comma list (default 0,1,2)")
    parser.add_argument(
        "--paper-schedule",
        action="store_true",
        help="downstream: freeze arms train twice the epochs, setting i after one epoch of setting ii",
    )
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="also align a LoRA-RU arm of this rank (same data, RU and steps as the RU-only arm; default off)",
    )
    parser.add_argument(
        "--lora-lr", type=float, default=None, help="the LoRA-RU arm's learning rate (default: align_lr)"
    )
    parser.add_argument(
        "--stop-after",
        choices=("baseline", "alignment", "audit", "ablation", "downstream"),
        help="end the run after this stage (its report then has the stages run so far)",
    )
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def build_plan(args: argparse.Namespace):
    from ssah.reproduce import Plan
    from ssah.reproduce.plan import ALIGNED_BUILTINS

    changes = {
        name: value
        for name, value in (
            ("model", args.model),
            ("seed", args.seed),
            ("eval_samples", args.samples),
            ("max_new_tokens", args.max_new_tokens),
            ("lora_rank", args.lora_rank),
            ("lora_lr", args.lora_lr),
        )
        if value is not None
    }
    if args.paper_schedule:
        changes["paper_schedule"] = True
    if args.aligned_as_shipped or args.model in ALIGNED_BUILTINS:
        changes["aligned_as_shipped"] = True
    lists = (
        ("prompt_formats", args.formats, str),
        ("compensations", args.compensations, str),
        ("control_seeds", args.control_seeds, int),
    )
    for name, flag, kind in lists:
        if flag is not None:
            changes[name] = tuple(kind(part.strip()) for part in flag.split(",") if part.strip())
    return Plan.quick(**changes) if args.quick else Plan(**changes)


def run(args: argparse.Namespace) -> int:
    import torch

    from ssah.reproduce import reproduce
    from ssah.reproduce.report import printed_summary
    from ssah_engine.loading import LoadOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = build_plan(args)
    options = LoadOptions(device=args.device, dtype=args.dtype)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    invoked = Path(sys.argv[0]).name == "ssah" and "reproduce" in sys.argv
    command = "ssah " + " ".join(shlex.quote(part) for part in sys.argv[1:]) if invoked else f"ssah reproduce {args}"
    results = reproduce(plan, args.out, options, say, command=command, stop_after=args.stop_after)
    print(printed_summary(results))
    print(f"finished in {time.perf_counter() - started:.0f}s; models: {len(results['models'])} in {args.out}")
    return 0

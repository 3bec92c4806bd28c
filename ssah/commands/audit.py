"""`ssah audit`: score and label every head and neuron of a model, write its unit map."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import ProgressBar, add_model_arguments, format_table, load_data, load_model_from_args, run_guarded

DEFAULT_SAFETY = "builtin:safety"
DEFAULT_UTILITY = "builtin:utility"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="label every head and neuron SCU/UCU/CU/RU",
        description="Score every attention head and MLP neuron on a safety and a utility set and label it.",
    )
    add_model_arguments(parser)
    parser.add_argument("--safety-data", default=DEFAULT_SAFETY, help="harmful prompts with refusals")
    parser.add_argument("--utility-data", default=DEFAULT_UTILITY, help="benign prompts with helpful answers")
    parser.add_argument("--samples", type=int, default=128, help="pairs per set (paper: 128)")
    parser.add_argument("--method", choices=("wifv", "wanda", "snip"), default="wifv")
    parser.add_argument("--cuts", default="0.10,0.01,0.10", help="parameter fractions RU,SCU,UCU")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per pair")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sampling", choices=("shuffle", "first"), default="shuffle",
                        help="which pairs: a seeded random sample, as the authors drew it (default), or the first N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled sample (authors: 0)")
    parser.add_argument("--estimator", choices=("pooled", "flap"), default="pooled",
                        help="activation variance: pooled over all response tokens, or flap (the authors' running "
                             "update, to reproduce their labels; wifv only)")
    parser.add_argument("--response-tokens", choices=("template", "content"), default="template",
                        help="tokens scored: the assistant turn as the template writes it (end-of-turn marker "
                             "included) or the response's own words")
    parser.add_argument("--responses", choices=("dataset", "self"), default="dataset",
                        help="dataset: score the written responses; self: the model's own greedy answers "
                             "(its refusals form the safety set, its other answers the utility set)")
    parser.add_argument("--self-response-tokens", type=int, default=64, help="new tokens per own answer (self mode)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the unit map")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def class_table(summary: dict) -> str:
    rows = [
        [
            name,
            entry["heads"],
            entry["neurons"],
            f"{100 * entry['unit_fraction']:.2f} %",
            f"{100 * entry['param_fraction']:.2f} %",
        ]
        for name, entry in summary["classes"].items()
    ]
    return format_table(["class", "heads", "neurons", "% of units", "% of parameters"], rows)


def run(args: argparse.Namespace) -> int:
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.classes import Cuts

    config = AuditConfig(
        method=args.method,
        samples=args.samples,
        cuts=Cuts.parse(args.cuts),
        max_length=args.max_length,
        batch_size=args.batch_size,
        sampling=args.sampling,
        seed=args.seed,
        estimator=args.estimator,
        response_tokens=args.response_tokens,
        responses=args.responses,
        self_response_tokens=args.self_response_tokens,
    )
    safety = load_data(args.safety_data, require_response=True)
    utility = load_data(args.utility_data, require_response=True)
    loaded = load_model_from_args(args)
    started = time.perf_counter()
    bar = ProgressBar("audit")
    try:
        unit_map = run_audit(loaded, safety, utility, config, progress=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    unit_map.save(args.out)
    summary = unit_map.summary()
    print(class_table(summary))
    print(f"\n{summary['units']['heads']} heads, {summary['units']['neurons']} neurons; "
          f"scored in {elapsed:.1f}s; unit map in {args.out}")
    (args.out / "timing.json").write_text(json.dumps({"audit_seconds": round(elapsed, 2)}) + "\n")
    sys.stdout.flush()
    return 0

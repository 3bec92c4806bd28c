"""`ssah audit`: score and label every head and neuron of a model, write its unit map."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ssah_engine.audit_config import AuditConfig

from .common import ProgressBar, add_model_arguments, format_table, load_data, load_model_from_args, run_guarded
from .config_flags import add_config_flags, config_values

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
    # Every setting of the audit: flags, defaults, choices and help come from AuditConfig's fields.
    names = add_config_flags(parser, AuditConfig)
    parser.add_argument("--out", type=Path, required=True, help="directory for the unit map")
    parser.set_defaults(run=lambda args: run_guarded(run, args), config_fields=names)


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


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    """The audit's AuditConfig from the parsed flags (the API derives the same config from a request body)."""
    return AuditConfig.from_dict(config_values(args, args.config_fields))


def run(args: argparse.Namespace) -> int:
    from ssah_engine.audit import run_audit

    config = config_from_args(args)
    safety = load_data(args.safety_data, require_response=True)
    utility = load_data(args.utility_data, require_response=True)
    loaded = load_model_from_args(args, streamed=config.stream_layers)
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
    print(
        f"\n{summary['units']['heads']} heads, {summary['units']['neurons']} neurons; "
        f"scored in {elapsed:.1f}s; unit map in {args.out}"
    )
    (args.out / "timing.json").write_text(json.dumps({"audit_seconds": round(elapsed, 2)}) + "\n")
    sys.stdout.flush()
    return 0

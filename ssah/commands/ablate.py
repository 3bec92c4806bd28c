"""`ssah ablate`: remove one class of units and measure how the response losses move."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_model_arguments, format_table, load_data, load_model_from_args, run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="remove a class of units and compare refusal and answer losses",
        description=(
            "Ablate one or more unit classes (zeroed, or replaced by their mean input with --compensation) and report the loss of "
            "refusals on the safety set and of helpful answers on the utility set, dense vs ablated. "
            "`ssah eval --ablate` measures generation-based safety (ASR) instead."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--units", type=Path, required=True, help="unit map directory from `ssah audit`")
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        required=True,
        help="class to remove: SCU/ESU, UCU/EUU, CU or RU (repeatable)",
    )
    parser.add_argument("--safety-data", default="builtin:safety")
    parser.add_argument("--utility-data", default="builtin:utility")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument(
        "--compensation",
        choices=("none", "safety", "utility", "pooled"),
        default="none",
        help="what replaces removed units: none (zeroing), or their mean input on the safety "
        "(the paper's), utility or both calibration passes",
    )
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def run(args: argparse.Namespace) -> int:
    from ssah_engine.ablation import ablate
    from ssah_engine.losses import response_nll
    from ssah_engine.unitmap import UnitMap

    unit_map = UnitMap.load(args.units)
    units = unit_map.mask(args.classes)
    sets = {
        "refusal NLL (safety set)": load_data(args.safety_data, require_response=True, limit=args.samples),
        "answer NLL (utility set)": load_data(args.utility_data, require_response=True, limit=args.samples),
    }
    loaded = load_model_from_args(args)

    def measure() -> dict[str, float]:
        return {
            name: response_nll(loaded.model, loaded.tokenizer, [(e.prompt, e.response) for e in data.examples])
            for name, data in sets.items()
        }

    dense = measure()
    with ablate(loaded.model, unit_map, units, compensation=args.compensation):
        ablated = measure()
    removed = "+".join(args.classes)
    rows = [
        [name, f"{dense[name]:.4f}", f"{ablated[name]:.4f}", f"{ablated[name] - dense[name]:+.4f}"] for name in sets
    ]
    print(f"removed {int(units.sum())} units ({removed}, {args.compensation} compensation)")
    print(format_table(["metric", "dense", f"minus {removed}", "delta"], rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "removed": args.classes,
            "units": int(units.sum()),
            "compensation": args.compensation,
            "dense": dense,
            "ablated": ablated,
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0

"""`ssah export`: write a model without a class of units as a normal Hugging Face checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CommandError, add_model_arguments, load_model_from_args, run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="save an ablated model as a checkpoint that plain transformers loads",
        description=(
            "Remove one or more unit classes (or a random:CLASS control) for good and save the model with "
            "save_pretrained, its tokenizer and a model card; the compensation is baked into the o_proj/down_proj "
            "biases, so the checkpoint gives the logits of the in-memory ablation (`ssah ablate`, `ssah eval --ablate`)."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--units", type=Path, required=True, help="unit map directory from `ssah audit`")
    parser.add_argument(
        "--ablate",
        dest="classes",
        action="append",
        required=True,
        metavar="CLASS",
        help="class to remove: SCU/ESU, UCU/EUU, CU, RU, or random:CLASS (repeatable)",
    )
    parser.add_argument(
        "--compensation",
        choices=("none", "safety", "utility", "pooled"),
        default="none",
        help="what replaces removed units: none (zeroing), or their mean input on the safety, utility or both passes",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a random:CLASS control")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the checkpoint to")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def run(args: argparse.Namespace) -> int:
    from ssah_engine.evaluation.ablation_spec import AblationSpec
    from ssah_engine.export import ExportError, export_ablated
    from ssah_engine.unitmap import UnitMap

    unit_map = UnitMap.load(args.units)
    try:
        spec = AblationSpec.parse(args.classes, seed=args.seed)
    except ValueError as error:
        raise CommandError(str(error)) from None
    units = spec.units(unit_map)
    loaded = load_model_from_args(args)
    try:
        export_ablated(
            loaded,
            unit_map,
            units,
            args.out,
            compensation=args.compensation,
            card={"ablation": spec.describe(unit_map, units), "unit_map_path": str(args.units)},
        )
    except ExportError as error:
        raise CommandError(str(error)) from None
    print(f"wrote {args.out}: {spec.label} removed ({int(units.sum())} units, {args.compensation} compensation)")
    return 0

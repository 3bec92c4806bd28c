"""`ssah probe`: the paper's reasoning-direction probe, the refusal direction and unit writes along it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ssah_engine.probe import ProbeConfig

from .common import CommandError, ProgressBar, add_model_arguments, format_table, load_data, run_guarded
from .config_flags import add_config_flags, config_values

DEFAULT_HARMFUL = "builtin:safety"
DEFAULT_HARMLESS = "builtin:utility"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="per-layer distance curves of refusal vs compliant continuations, and the refusal direction",
        description=(
            "For each harmful query, the cosine distance per layer between the query's state and the query "
            "followed by k refusal or k compliance tokens (the SSAH paper's Fig. 2-4); the refusal direction "
            "per layer (harmful minus harmless mean at the last prompt position, calibration prompts only); "
            "and, with --units, how much each class of units writes along it. --compare B probes a second "
            "model the same way and reports the differences."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--compare", metavar="SOURCE", help="a second model probed the same way (e.g. the unaligned one)"
    )
    parser.add_argument("--harmful", default=DEFAULT_HARMFUL, help="harmful calibration prompts with refusals")
    parser.add_argument("--harmless", default=DEFAULT_HARMLESS, help="harmless calibration prompts")
    # Every setting of the probe: flags, defaults, choices and help come from ProbeConfig's fields.
    names = add_config_flags(parser, ProbeConfig)
    parser.add_argument("--units", type=Path, help="unit map directory from `ssah audit` of --model")
    parser.add_argument(
        "--export-orthogonalized",
        type=Path,
        metavar="DIR",
        help="also save --model with the direction projected out of its weights",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for probe.json and the direction")
    parser.set_defaults(run=lambda args: run_guarded(run, args), config_fields=names)


def _load(source: str, args):
    from .common import load_model_from_args

    return load_model_from_args(argparse.Namespace(**{**vars(args), "model": source}))


def curve_table(data: dict) -> str:
    """Layer-averaged distances per k: a one-screen reading of the curves."""
    distances = data["distances"]
    rows = []
    for k in distances["refusal"]:
        ref, comp = distances["refusal"][k], distances["compliance"][k]
        third = max(1, len(ref) // 3)
        rows.append(
            [
                k,
                f"{sum(ref) / len(ref):.3f}",
                f"{sum(comp) / len(comp):.3f}",
                f"{sum(distances['gap'][k][:third]) / third:.3f}",
                f"{sum(distances['gap'][k]) / len(ref):.3f}",
            ]
        )
    return format_table(
        [
            "k",
            "d(refusal), mean of layers",
            "d(compliance), mean of layers",
            "gap, first third of layers",
            "gap, all layers",
        ],
        rows,
    )


def config_from_args(args: argparse.Namespace) -> ProbeConfig:
    """The probe's ProbeConfig from the parsed flags (the API derives the same config from a request body)."""
    try:
        return ProbeConfig.from_dict(config_values(args, args.config_fields))
    except ValueError as error:
        raise CommandError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    from ssah_engine.model_card import write_model_card
    from ssah_engine.probe import (
        compare_probes,
        orthogonalize_weights,
        run_probe,
    )

    config = config_from_args(args)
    harmful = load_data(args.harmful, require_response=True)
    harmless = load_data(args.harmless)
    unit_map = None
    if args.units:
        from ssah_engine.unitmap import UnitMap

        unit_map = UnitMap.load(args.units)
    results = {}
    for name, source, units in (("model", args.model, unit_map), ("compare", args.compare, None)):
        if source is None:
            continue
        loaded = _load(source, args)
        started = time.perf_counter()
        bar = ProgressBar(f"probe {source}")
        try:
            report = run_probe(loaded, harmful, harmless, config, unit_map=units, progress=bar)
        finally:
            bar.close()
        report.save(args.out / name)
        results[name] = report.data
        print(
            f"\n{source}: {report.data['queries']} queries, {time.perf_counter() - started:.1f}s; "
            f"refusal direction at layer {report.direction.layer} "
            f"(held-out accuracy {report.direction.accuracy[report.direction.layer]:.2f})"
        )
        print(curve_table(report.data))
        if name == "model" and args.export_orthogonalized:
            orthogonalize_weights(loaded.model, report.direction.unit)
            loaded.model.save_pretrained(args.export_orthogonalized)
            loaded.tokenizer.save_pretrained(args.export_orthogonalized)
            write_model_card(
                args.export_orthogonalized,
                kind="orthogonalized",
                source=source,
                masks={"refusal_direction_removed_from_weights": {"layer": report.direction.layer}},
                results={"direction_accuracy": report.direction.accuracy[report.direction.layer]},
            )
            print(f"orthogonalised checkpoint in {args.export_orthogonalized}", file=sys.stderr)
        del loaded
    combined = {"model": results["model"]}
    if "compare" in results:
        combined["compare"] = results["compare"]
        combined["difference"] = compare_probes(results["model"], results["compare"])
    (args.out / "probe.json").write_text(json.dumps(combined, indent=2) + "\n")
    print(f"\nresults in {args.out}")
    return 0

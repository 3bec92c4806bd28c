"""`ssah transfer`: cross-tabulate the labels of two unit maps (how unit roles moved)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import format_table, run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "transfer",
        help="role transfer between two unit maps",
        description="Cross-tabulate the labels of two unit maps of the same architecture (before -> after).",
    )
    parser.add_argument("before", type=Path, help="unit map directory of the earlier checkpoint")
    parser.add_argument("after", type=Path, help="unit map directory of the later checkpoint")
    parser.add_argument("--out", type=Path, help="write the cross-tab as JSON here")
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def transfer_table(result: dict) -> str:
    classes = result["classes"]
    rows = [
        [f"{name} ->"] + [f"{count} ({100 * fraction:.1f} %)" for count, fraction in zip(counts, fractions)]
        for name, counts, fractions in zip(classes, result["counts"], result["row_fractions"])
    ]
    return format_table(["before \\ after"] + classes, rows)


def run(args: argparse.Namespace) -> int:
    from ssah_engine.transfer import role_transfer
    from ssah_engine.unitmap import UnitMap

    result = role_transfer(UnitMap.load(args.before), UnitMap.load(args.after))
    print(transfer_table(result))
    print(f"\nunchanged: {100 * result['unchanged_fraction']:.2f} % of units")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0

"""`ssah report`: a self-contained HTML report of an audit, evaluation or fine-tune directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import run_guarded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of an audit, evaluation or fine-tune directory",
        description="Write one HTML file (inline CSS and SVG plots, no server needed) from a run's outputs.",
    )
    parser.add_argument(
        "directory", type=Path, metavar="DIR", help="an audit, evaluation, fine-tune, probe or reproduce output dir"
    )
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    parser.add_argument(
        "--kind",
        choices=("audit", "evaluation", "finetune", "probe", "reproduce"),
        default=None,
        help="what DIR holds (default: detected from its files)",
    )
    parser.set_defaults(run=lambda args: run_guarded(run, args))


def run(args: argparse.Namespace) -> int:
    from ssah.report import build_report

    html = build_report(args.directory, args.kind)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(html)
    print(f"wrote {args.out} ({len(html) // 1024} KiB)")
    return 0

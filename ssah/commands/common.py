"""Pieces shared by the engine commands: model loading, progress bars, table printing."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="SOURCE",
        help="hub id, local directory, .gguf file, builtin:smollm2, builtin:qwen2.5-coder-0.5b or builtin:tiny-<family>",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 ... (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where converted GGUF models are cached")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    from ssah_engine.placement import Placement

    from .config_flags import add_config_flags

    add_config_flags(parser, Placement)


def placement_from_args(args):
    """The ``Placement`` the ``--device-map``/``--max-memory``/``--offload-folder`` flags name."""
    from ssah_engine.placement import Placement
    from ssah_engine.settings_fields import setting_fields

    from .config_flags import config_values

    return Placement.from_dict(config_values(args, [setting.name for setting in setting_fields(Placement)]))


def load_model_from_args(args, *, streamed: bool = False):
    """The model ``--model`` names; ``streamed``: a skeleton whose layers the audit reads one at a time."""
    from ssah_engine.loading import DEFAULT_CACHE_DIR, LoadOptions, ModelLoadError, load_model
    from ssah_engine.streaming import load_streamed

    placement = placement_from_args(args)
    if placement.active and getattr(args, "command", None) == "finetune":
        raise CommandError(
            "--device-map places models for audits, evaluations and probes; ssah finetune trains on one device"
        )
    started = time.perf_counter()
    try:
        options = LoadOptions(
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            cache_dir=args.cache_dir or DEFAULT_CACHE_DIR,
            placement=placement,
        )
        loaded = load_streamed(args.model, options) if streamed else load_model(args.model, options)
    except ModelLoadError as error:
        raise CommandError(str(error)) from None
    print(f"loaded {args.model} in {time.perf_counter() - started:.1f}s on {loaded.device}", file=sys.stderr)
    return loaded


def load_data(source: str, **kwargs):
    from ssah_engine.data import DatasetError, load_dataset

    try:
        return load_dataset(source, **kwargs)
    except DatasetError as error:
        raise CommandError(str(error)) from None


class ProgressBar:
    """A tqdm bar driven by the engine's (stage, fraction) progress callbacks."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr, leave=True)

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.set_postfix_str(stage)
        self.bar.update(int(fraction * 1000) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def format_table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(cell.rjust(width) for cell, width in zip(row, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def run_guarded(function, args) -> int:
    """Run a command body, turning user errors into one clear line and exit status 2."""
    try:
        return function(args) or 0
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"ssah {args.command}: error: {error}", file=sys.stderr)
        return 2

"""Entry point of the `ssah` command.

Each subcommand lives in ``ssah/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Command modules import heavy libraries (torch, the engine, the service)
inside ``run`` so that ``ssah --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = (
    "audit",
    "ablate",
    "export",
    "transfer",
    "eval",
    "finetune",
    "reproduce",
    "probe",
    "serve",
    "keys",
    "worker",
    "report",
    "remote",
)


# Packages of the optional extras (pyproject.toml): a command that needs one names the extra to install.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        (
            "fastapi",
            "uvicorn",
            "sqlalchemy",
            "alembic",
            "psycopg",
            "celery",
            "redis",
            "pydantic",
            "pydantic_settings",
            "multipart",
            "prometheus_client",
            "fsspec",
        ),
        "service",
    ),
    "httpx": "client",
    "lm_eval": "eval",
    "datasets": "hub",
    "peft": "peft",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssah", description="Audit LLMs at the level of single neurons and attention heads (SSAH)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ssah.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"ssah.commands.{name}":
                raise
            continue  # a command not written yet
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        extra = EXTRA_OF_MODULE.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"ssah {args.command}: needs the '{extra}' extra: pip install 'ssah-audit[{extra}]' ({error})",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())

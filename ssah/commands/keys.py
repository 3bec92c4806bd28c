"""`ssah keys`: create, revoke and list API keys (only their hashes are stored); webhook secrets, retention."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create, revoke and list API keys",
        description="Manage API keys in the database of SSAH_DATABASE_URL.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True, help="tenant name; created if new")
    revoke = actions.add_parser("revoke", help="revoke a key by its displayed prefix")
    revoke.add_argument("prefix", help="the key's first characters, as `ssah keys list` shows them")
    actions.add_parser("list", help="list keys (prefix, tenant, created, revoked)")
    secret = actions.add_parser(
        "webhook-secret", help="create or rotate a tenant's webhook signing secret and print it once"
    )
    secret.add_argument("--tenant", required=True, help="tenant name (must exist)")
    retention = actions.add_parser("retention", help="set how many days a tenant's finished jobs are kept")
    retention.add_argument("--tenant", required=True, help="tenant name (must exist)")
    retention.add_argument(
        "--days",
        type=_days,
        required=True,
        help="days to keep finished jobs (a worker deletes older ones); 0: for ever",
    )
    parser.set_defaults(run=run)


def _days(text: str) -> int:
    days = int(text)
    if not 0 <= days <= 36_500:
        raise argparse.ArgumentTypeError("between 0 (keep for ever) and 36500")
    return days


def run(args: argparse.Namespace) -> int:
    from service.admin import run_keys_action

    return run_keys_action(
        args.action,
        tenant=getattr(args, "tenant", None),
        prefix=getattr(args, "prefix", None),
        days=getattr(args, "days", None) or None,
    )

"""`ssah keys`: create, revoke and list API keys (only their hashes are stored)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("keys", help="create, revoke and list API keys",
                                   description="Manage API keys in the database of SSAH_DATABASE_URL.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True, help="tenant name; created if new")
    revoke = actions.add_parser("revoke", help="revoke a key by its displayed prefix")
    revoke.add_argument("prefix", help="the key's first characters, as `ssah keys list` shows them")
    actions.add_parser("list", help="list keys (prefix, tenant, created, revoked)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from service.admin import KeyNotFound, create_api_key, list_api_keys, revoke_api_key
    from service.db import get_sessionmaker, session_scope

    for session in session_scope(get_sessionmaker()):
        if args.action == "create":
            print(create_api_key(session, args.tenant))
        elif args.action == "revoke":
            try:
                revoked = revoke_api_key(session, args.prefix)
            except KeyNotFound as error:
                print(f"ssah keys: error: {error}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.prefix}")
        else:
            for row in list_api_keys(session):
                print("\t".join(row))
    return 0

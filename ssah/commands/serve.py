"""`ssah serve`: the API; with no configuration also a SQLite database and an in-process worker.

Embedded (the default when neither SSAH_DATABASE_URL nor SSAH_BROKER_URL is set): migrate the
SQLite file, print an API key on first start, run jobs in a thread of this process. Otherwise the
production layout: the API only, with Celery workers (`ssah worker`) running the jobs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EMBEDDED_BROKER = "memory://"  # the API still "sends" each job; nobody consumes it, the thread polls the DB
FIRST_TENANT = "default"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the REST API (embedded worker and SQLite when unconfigured)",
        description="Run the REST API. Without SSAH_DATABASE_URL/SSAH_BROKER_URL: SQLite + an in-process worker.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--embedded",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run jobs in this process (default: when no database or broker URL is set)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes (production layout only)")
    parser.set_defaults(run=run)


def is_embedded(flag: bool | None, environ: dict[str, str]) -> bool:
    """Embedded unless told otherwise or a database/broker URL is configured."""
    if flag is not None:
        return flag
    return not (environ.get("SSAH_DATABASE_URL") or environ.get("SSAH_BROKER_URL"))


def migrate(database_url: str) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[2]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def first_key(factory) -> str | None:
    """A new API key for the ``default`` tenant when the database has no key yet, else None."""
    import sqlalchemy as sa

    from service.admin import create_api_key
    from service.models import ApiKey

    with factory.begin() as session:
        if session.scalar(sa.select(sa.func.count()).select_from(ApiKey)):
            return None
        return create_api_key(session, FIRST_TENANT)


def _log_config() -> dict:
    """JSON logs: uvicorn's own lines go to the root logger's JSON handler (service/logs.py), not its text ones."""
    from service import logs
    from service.settings import get_settings

    settings = get_settings()
    if settings.log_format != "json":
        return {}
    logs.configure("json", settings.log_level)  # this process's lines too (the supervisor of --workers)
    return {"log_config": None}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    embedded = is_embedded(args.embedded, dict(os.environ))
    if not embedded:
        uvicorn.run("service.main:app", host=args.host, port=args.port, workers=args.workers, **_log_config())
        return 0

    os.environ["SSAH_BROKER_URL"] = EMBEDDED_BROKER  # read by the settings below, before anything caches them
    from service.db import get_sessionmaker
    from service.main import create_app
    from service.settings import get_settings
    from worker.embedded import EmbeddedWorker

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    factory = get_sessionmaker(settings.database_url)
    key = first_key(factory)
    print(f"SSAH Audit (embedded): database {settings.database_url}, artifacts {settings.artifact_dir}")
    if key:
        print(f"API key: {key}\n  (shown once; stored hashed. More: ssah keys create --tenant NAME)")
    sys.stdout.flush()
    worker = EmbeddedWorker(settings, factory)
    worker.start()
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, **_log_config())
    finally:
        worker.stop()
    return 0

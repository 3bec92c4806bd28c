"""`ssah worker`: a Celery worker for the production layout (same as `celery -A worker.app worker`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a Celery worker (production layout)",
        description="Consume jobs from the broker (SSAH_BROKER_URL) and run them; also runs the reconciler.",
    )
    parser.add_argument(
        "--queues", default="gpu,cpu", help="comma list: gpu (audits, evaluations, fine-tunes), cpu (comparisons)"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once (1 per GPU)")
    parser.add_argument(
        "--pool",
        choices=("prefork", "solo", "threads"),
        default="prefork",
        help="prefork: a crashed job process is requeued at once",
    )
    parser.add_argument("--loglevel", default="INFO")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from worker.app import app

    app.worker_main(
        ["worker", "-Q", args.queues, "-c", str(args.concurrency), f"--pool={args.pool}", f"--loglevel={args.loglevel}"]
    )
    return 0

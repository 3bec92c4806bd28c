"""Load test of the hot path: N concurrent pollers of ``GET /v1/jobs/{id}`` against a real server.

Starts uvicorn on a free loopback port (PostgreSQL backend, scratch database migrated by Alembic),
creates a key and one job, then polls for a fixed time. Prints ``rps=``, ``p50_ms=``, ``p99_ms=``,
``errors=`` one per line. Pollers send ``If-None-Match`` like a dashboard would (``--no-etag`` to
always fetch the full body).

    python bench/api_load.py --seconds 20 --pollers 200 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/ssah_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(url: str) -> str:
    """Recreate the scratch database, migrate it, and return a fresh API key."""
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    env = {**os.environ, "SSAH_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    from service.admin import create_api_key
    from service.db import make_engine
    from sqlalchemy.orm import Session

    engine = make_engine(url)
    with Session(engine) as session:
        key = create_api_key(session, "bench")
        session.commit()
    engine.dispose()
    return key


def start_server(url: str, port: int, workers: int, broker_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SSAH_DATABASE_URL": url, "SSAH_BROKER_URL": broker_url, "SSAH_LOG_LEVEL": "WARNING",
           "SSAH_DB_POOL_SIZE": "8"}
    cmd = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--backlog", "2048"]
    return subprocess.Popen(cmd, cwd=REPO, env=env)


def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def poll(base: str, path: str, headers: dict[str, str], seconds: float, pollers: int, etag: bool,
               interval: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=10.0) as client:
        # Warm every connection first, so connection setup does not count as latency.
        await asyncio.gather(*(client.get(path) for _ in range(pollers)))
        start = time.perf_counter()
        stop = start + seconds

        async def poller() -> None:
            nonlocal errors
            current: str | None = None
            if interval:  # dashboards poll on their own clocks, not in lockstep
                await asyncio.sleep(random.uniform(0, interval))
            while (now := time.perf_counter()) < stop:
                t0 = now
                try:
                    r = await client.get(path, headers={"If-None-Match": current} if (etag and current) else None)
                    if r.status_code == 200:
                        current = r.headers.get("etag")
                    elif r.status_code != 304:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)
                if interval:
                    await asyncio.sleep(interval)

        await asyncio.gather(*(poller() for _ in range(pollers)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to poll")
    parser.add_argument("--pollers", type=int, default=200, help="concurrent pollers")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="pause between a poller's requests, in seconds (0: poll back to back)")
    parser.add_argument("--no-etag", action="store_true", help="never send If-None-Match")
    parser.add_argument("--database-url", default=os.environ.get("SSAH_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--broker-url", default=os.environ.get("SSAH_BROKER_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args(argv)

    key = prepare_database(args.database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(args.database_url, port, args.workers, args.broker_url)
    try:
        wait_ready(base)
        headers = {"Authorization": f"Bearer {key}"}
        model = httpx.post(f"{base}/v1/models", json={"name": "smol", "source": "builtin:smollm2"},
                           headers=headers).json()["id"]
        job = httpx.post(f"{base}/v1/audits", json={"model_id": model}, headers=headers)
        job.raise_for_status()
        path = f"/v1/jobs/{job.json()['id']}"
        latencies, errors, elapsed = asyncio.run(
            poll(base, path, headers, args.seconds, args.pollers, not args.no_etag, args.interval))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"pollers={args.pollers}")
    print(f"workers={args.workers}")
    print(f"requests={len(latencies)}")
    print(f"rps={len(latencies) / elapsed:.0f}")
    print(f"p50_ms={percentile(latencies, 0.50) * 1000:.1f}")
    print(f"p99_ms={percentile(latencies, 0.99) * 1000:.1f}")
    print(f"errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load test of the hot path: N concurrent pollers of ``GET /v1/jobs/{id}`` against a real server.

Starts uvicorn on a free loopback port (PostgreSQL backend, scratch database migrated by Alembic),
creates a key and one job, then runs two phases of ``--seconds`` each:

1. the target: ``--pollers`` dashboards, each polling every ``--interval`` seconds on its own clock;
   prints ``rps=``, ``p50_ms=``, ``p99_ms=``, ``errors=`` (target: p99 < 50 ms, no error);
2. saturation: the same pollers back to back, no pause; prints ``saturated_rps=`` and its
   latencies, i.e. the server's capacity (with 200 requests always in flight, latency is
   200 / capacity whatever the code does).

Pollers send ``If-None-Match`` like a dashboard would (``--no-etag`` to always fetch the body).

    python bench/api_load.py --seconds 20 --pollers 200 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True, capture_output=True
    )
    from sqlalchemy.orm import Session

    from service.admin import create_api_key
    from service.db import make_engine

    engine = make_engine(url)
    with Session(engine) as session:
        key = create_api_key(session, "bench")
        session.commit()
    engine.dispose()
    return key


def start_server(url: str, port: int, workers: int, broker_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SSAH_DATABASE_URL": url,
        "SSAH_BROKER_URL": broker_url,
        "SSAH_LOG_LEVEL": "WARNING",
        # One key for every poller: the limiter stays on the path (one Redis round trip) but never refuses.
        "SSAH_RATE_LIMIT_PER_MINUTE": "100000000",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "2048",
    ]
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


class Connection:
    """A bare HTTP/1.1 keep-alive connection: a few microseconds of client CPU per request.

    httpx spends about a millisecond of CPU per request; on a 2-core machine 200 such pollers
    steal the server's cores and the bench then measures the client.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, headers: dict[str, str]):
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    @classmethod
    async def open(cls, host: str, port: int, headers: dict[str, str]) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", headers)

    async def get(self, path: str, etag: str | None) -> tuple[int, str | None]:
        """Send one GET and read the whole answer; return its status and ETag."""
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode("latin-1"))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
        if status != 304:  # a 304 has no body
            if "content-length" not in fields:
                raise ValueError(f"answer without Content-Length: {lines[0]}")
            await self.reader.readexactly(int(fields["content-length"]))
        return status, fields.get("etag")

    def close(self) -> None:
        self.writer.close()


async def poll(
    host: str, port: int, path: str, headers: dict[str, str], seconds: float, pollers: int, etag: bool, interval: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    # Open and warm every connection first, so connection setup does not count as latency.
    connections = await asyncio.gather(*(Connection.open(host, port, headers) for _ in range(pollers)))
    for connection in connections:
        await connection.get(path, None)
    # The load generator must not measure itself: no collector pauses while the clock runs.
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    stop = start + seconds

    async def poller(connection: Connection) -> None:
        nonlocal errors
        current: str | None = None
        if interval:  # dashboards poll on their own clocks, not in lockstep
            await asyncio.sleep(random.uniform(0, interval))
        while (now := time.perf_counter()) < stop:
            t0 = now
            try:
                status, tag = await asyncio.wait_for(connection.get(path, current if etag else None), 10.0)
                if status == 200:
                    current = tag
                elif status != 304:
                    errors += 1
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                errors += 1
                connection.close()
                connection = await Connection.open(host, port, headers)
            latencies.append(time.perf_counter() - t0)
            if interval:
                await asyncio.sleep(interval)

    await asyncio.gather(*(poller(c) for c in connections))
    elapsed = time.perf_counter() - start
    gc.enable()
    for connection in connections:
        connection.close()
    return latencies, errors, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to poll")
    parser.add_argument("--pollers", type=int, default=200, help="concurrent pollers")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="pause between a poller's requests in phase 1, in seconds"
    )
    parser.add_argument("--no-saturation", action="store_true", help="skip phase 2 (back-to-back polling)")
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
        model = httpx.post(
            f"{base}/v1/models", json={"name": "smol", "source": "builtin:smollm2"}, headers=headers
        ).json()["id"]
        job = httpx.post(f"{base}/v1/audits", json={"model_id": model}, headers=headers)
        job.raise_for_status()
        path = f"/v1/jobs/{job.json()['id']}"
        target = asyncio.run(
            poll("127.0.0.1", port, path, headers, args.seconds, args.pollers, not args.no_etag, args.interval)
        )
        saturated = (
            None
            if args.no_saturation
            else asyncio.run(poll("127.0.0.1", port, path, headers, args.seconds, args.pollers, not args.no_etag, 0.0))
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"pollers={args.pollers}")
    print(f"workers={args.workers}")
    print(f"interval_s={args.interval}")
    report("", *target)
    if saturated is not None:
        report("saturated_", *saturated)
    return 0 if target[1] == 0 else 1


def report(prefix: str, latencies: list[float], errors: int, elapsed: float) -> None:
    print(f"{prefix}requests={len(latencies)}")
    print(f"{prefix}rps={len(latencies) / elapsed:.0f}")
    print(f"{prefix}p50_ms={percentile(latencies, 0.50) * 1000:.1f}")
    print(f"{prefix}p99_ms={percentile(latencies, 0.99) * 1000:.1f}")
    print(f"{prefix}errors={errors}")


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end fixtures: a scratch PostgreSQL database, a dedicated Redis DB, real Celery worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.admin import create_api_key
from service.main import create_app
from service.models import UnitMap
from service.settings import Settings
from tests.service.conftest import REPO, build_database

E2E_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/ssah_e2e"
# Engineers sharing a machine each name their own Redis DB (tests/service/conftest.py reads the same variable).
E2E_BROKER = os.environ.get("SSAH_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
TERMINAL = {"succeeded", "failed", "cancelled"}
# Short clocks so faults heal within seconds (production: hours and minutes, see service/settings.py).
WORKER_ENV = {
    "SSAH_VISIBILITY_TIMEOUT": "10",
    "SSAH_STALE_SECONDS": "6",
    "SSAH_HEARTBEAT_SECONDS": "1",
    "SSAH_PROGRESS_INTERVAL_SECONDS": "0.5",
    "SSAH_RECONCILE_INTERVAL_SECONDS": "2",
    "SSAH_REQUEUE_AFTER_SECONDS": "3",
    "SSAH_EVAL_SAMPLE_LIMIT": "2",
}


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(E2E_BROKER, socket_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def start_redis() -> None:
    if not redis_up():
        subprocess.run(REDIS_START, check=True)
    for _ in range(50):
        if redis_up():
            return
        time.sleep(0.1)
    raise RuntimeError("Redis did not come back")


def stop_redis() -> None:
    """Stop Redis without saving: queued and unacknowledged messages are gone."""
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False, capture_output=True
    )
    for _ in range(50):
        if not redis_up():
            return
        time.sleep(0.1)
    raise RuntimeError("Redis did not stop")


@pytest.fixture(scope="session")
def e2e_database() -> str:
    url = os.environ.get("SSAH_E2E_DATABASE_URL", E2E_DB)
    build_database(url)
    return url


@pytest.fixture
def e2e_settings(e2e_database: str, tmp_path: Path) -> Settings:
    start_redis()
    redis.Redis.from_url(E2E_BROKER).flushdb()
    return Settings(
        database_url=e2e_database, broker_url=E2E_BROKER, artifact_dir=tmp_path / "artifacts", api_key_cache_seconds=0.0
    )


@pytest.fixture
def factory(e2e_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = sa.create_engine(e2e_settings.database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


class Worker:
    """``celery -A worker.app worker`` in its own process group, so ``kill -9`` takes all of it."""

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str] | None = None):
        self.settings, self.log_path, self.process = settings, log_path, None
        self.env = env or {}  # extra variables, e.g. tests/reliability's model policy

    def start(self) -> Worker:
        env = {
            **os.environ,
            **WORKER_ENV,
            "SSAH_DATABASE_URL": self.settings.database_url,
            "SSAH_BROKER_URL": self.settings.broker_url,
            "SSAH_ARTIFACT_DIR": str(self.settings.artifact_dir),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **self.env,
        }
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.app",
                    "worker",
                    "-Q",
                    "gpu,cpu",
                    "-c",
                    "1",
                    "--pool=solo",
                    "--loglevel=INFO",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes()[self.offset :]:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"worker did not start:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9`` of the worker's whole process group: no chance to ack, requeue or clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP the whole worker: it takes no message until ``resume``."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


@contextmanager
def final_write_held(engine: sa.Engine, worker: Worker, submit: Callable[[], str]) -> Iterator[str]:
    """Submit a job (``submit`` returns its id) that runs, then waits on its final write until the block ends.

    A tiny audit takes a fraction of a second: too short to catch it running by polling. Here an
    uncommitted unit-map row for the job holds the unique key the worker's final insert needs, so
    the job stays running, deterministically, until this block ends (or PostgreSQL stops).
    """
    worker.pause()  # the job must not start before the block is in place
    try:
        job_id = submit()
        connection = engine.connect()
        transaction = connection.begin()
        connection.execute(sa.insert(UnitMap).values(id=uuid.uuid4(), job_id=uuid.UUID(job_id), summary={}))
    finally:
        worker.resume()
    try:
        yield job_id
    finally:
        try:
            transaction.rollback()
            connection.close()
        except sa.exc.DBAPIError:  # PostgreSQL was stopped meanwhile: the block died with it
            pass


def wait_for_redelivery(job: dict) -> None:
    """Sleep (at most 15 s) until the message of ``job``, running since ``started_at``, outlived the visibility timeout.

    A new worker restores expired unacknowledged messages as it starts, then only every ~100 s (kombu:
    every 10 s, throttled to one scan in 10): started before the killed worker's message is due, it
    would leave the job waiting that long.
    """
    due = datetime.fromisoformat(job["started_at"]).timestamp() + int(WORKER_ENV["SSAH_VISIBILITY_TIMEOUT"])
    time.sleep(min(max(due + 0.5 - time.time(), 0.0), 15.0))


@pytest.fixture
def worker(e2e_settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    """A worker, not started yet; killed after the test whatever happened."""
    process = Worker(e2e_settings, tmp_path / "worker.log")
    yield process
    process.kill()


@pytest.fixture
def client(e2e_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(e2e_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def headers(factory: sessionmaker[Session]) -> dict[str, str]:
    with factory.begin() as session:
        key = create_api_key(session, f"e2e-{uuid.uuid4().hex[:8]}")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def model_id(client: TestClient, headers: dict[str, str]) -> str:
    r = client.post("/v1/models", json={"name": "tiny", "source": "builtin:tiny-llama"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def poll(
    client: TestClient,
    path: str,
    headers: dict[str, str],
    *,
    timeout: float = 120,
    until=lambda job: job["status"] in TERMINAL,
    worker: Worker | None = None,
) -> dict:
    """GET ``path`` until ``until(job)``; fails with the worker's log after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(path, headers=headers).json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"{path} still {job.get('status')} after {timeout}s: {job}\n{worker.log() if worker else ''}")
        time.sleep(0.3)

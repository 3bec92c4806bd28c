"""Queues by GPU memory class with real Celery workers: a 24g worker runs the small model's audit and leaves the
big one (registered at 30 B parameters) queued; an 80g worker takes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.e2e.conftest import REPO, WORKER_ENV, poll

pytestmark = pytest.mark.slow
CLASSES = "24g,80g"


def _start(settings: Settings, gpu_class: str, log: Path) -> subprocess.Popen:
    """`ssah worker --gpu-class CLASS` (the queues come from the class), in its own process group."""
    env = {
        **os.environ,
        **WORKER_ENV,
        "SSAH_DATABASE_URL": settings.database_url,
        "SSAH_BROKER_URL": settings.broker_url,
        "SSAH_ARTIFACT_DIR": str(settings.artifact_dir),
        "SSAH_GPU_CLASSES": CLASSES,
        "SSAH_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ssah.cli", "worker", "--gpu-class", gpu_class, "--pool", "solo"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and b"ready." not in log.read_bytes():
        assert process.poll() is None, log.read_text()[-4000:]
        time.sleep(0.3)
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_a_job_reaches_only_workers_of_its_class(e2e_settings, headers, tmp_path):
    settings = e2e_settings.model_copy(update={"gpu_classes": CLASSES.split(",")})
    broker = redis.Redis.from_url(settings.broker_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def model(name: str, parameters: str) -> str:
            body = {"name": name, "source": "builtin:tiny-llama", "labels": {"parameters": parameters}}
            return client.post("/v1/models", json=body, headers=headers).json()["id"]

        small, big = model("small", "1e6"), model("big", "30e9")  # 2.5 MB and 75 GB in bf16
        small_job = client.post("/v1/audits", json={"model_id": small, "samples": 8}, headers=headers)
        big_job = client.post("/v1/audits", json={"model_id": big, "samples": 8}, headers=headers)
        assert broker.llen("gpu-24g") == 1 and broker.llen("gpu-80g") == 1 and broker.llen("gpu") == 0

        worker = _start(settings, "24g", tmp_path / "w24.log")
        try:
            assert poll(client, small_job.headers["Location"], headers)["status"] == "succeeded"
            time.sleep(3)  # time enough to take a second message, if it could
            assert client.get(big_job.headers["Location"], headers=headers).json()["status"] == "queued"
            assert broker.llen("gpu-80g") == 1
        finally:
            _stop(worker)
        worker = _start(settings, "80g", tmp_path / "w80.log")
        try:
            assert poll(client, big_job.headers["Location"], headers)["status"] == "succeeded"
        finally:
            _stop(worker)

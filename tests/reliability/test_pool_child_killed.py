"""A prefork pool child killed mid-job (OOM killer, kill -9, hard time limit): the job is rerun at once.

Not after the stale period and not after the visibility timeout: both are an hour here, so only the
main process's immediate retry (``retry_on_worker_lost``) can get the job going again in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.models import UnitMap
from tests.e2e.conftest import WORKER_ENV, Worker, poll
from tests.reliability.conftest import Stack, audit_held_running
from tests.service.conftest import REPO

AN_HOUR = "3600"


class PreforkWorker(Worker):
    """The stack's worker, but with a prefork pool of one child (``Worker`` runs ``--pool=solo``)."""

    def start(self) -> PreforkWorker:
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
        with open(self.log_path, "ab") as log:
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
                    "--pool=prefork",
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
        while b"ready." not in self.log_path.read_bytes()[self.offset :]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()}")
            time.sleep(0.3)
        return self

    def pool_child(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])


@pytest.mark.slow  # starts its own worker (~10 s)
def test_a_killed_pool_child_is_rerun_at_once_with_one_result(stack: Stack, client, tenant, model_id) -> None:
    stack.worker.kill()  # the stack's solo worker must not take the job; the next test restarts it
    worker = PreforkWorker(
        stack.worker.settings,
        stack.base / "prefork.log",
        env={
            **stack.worker.env,
            "SSAH_STALE_SECONDS": AN_HOUR,
            "SSAH_VISIBILITY_TIMEOUT": AN_HOUR,
            "SSAH_RECONCILE_INTERVAL_SECONDS": AN_HOUR,
        },
    )
    worker.start()
    try:
        with audit_held_running(stack, worker, client, {"model_id": model_id, "samples": 128}) as job_id:
            location = f"/v1/jobs/{job_id}"
            assert client.get(location).json()["attempts"] == 1
            os.kill(worker.pool_child(), signal.SIGKILL)  # the child only: the main process sees it die
            taken_over = poll(client, location, {}, worker=worker, timeout=60, until=lambda job: job["attempts"] == 2)
            assert taken_over["status"] == "running"
        job = poll(client, location, {}, worker=worker, timeout=60)
        assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 2, None), worker.log()
        with stack.factory() as session:
            assert len(session.scalars(sa.select(UnitMap).where(UnitMap.job_id == uuid.UUID(job_id))).all()) == 1
    finally:
        worker.kill()

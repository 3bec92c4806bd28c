"""docs/pipelines.md's scripts against a real stack: a uvicorn process, a Celery worker process, PostgreSQL, Redis.

The example pipeline (examples/pipeline.py, quoted whole by the doc) runs as a subprocess on the tiny
built-in model: a first checkpoint passes its gates (exit 0), webhooks signed by the worker reach
examples/webhook_receiver.py on loopback, a second checkpoint is gated against the first's audit and
fails an ASR threshold (exit 3); ``ssah remote ... --wait --json`` gives the same verdicts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from examples.webhook_receiver import make_server
from service.admin import create_api_key
from service.settings import Settings
from ssah_client import Client, NotFound
from tests.e2e.conftest import Worker
from tests.service.conftest import REPO

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "pipelines.md"
SCRIPT = REPO / "examples" / "pipeline.py"
RECEIVER = REPO / "examples" / "webhook_receiver.py"
SMALL = ["--samples", "8", "--max-new-tokens", "2"]  # the worker also keeps 2 prompts a set (SSAH_EVAL_SAMPLE_LIMIT)
LOOPBACK = {"SSAH_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "SSAH_WEBHOOK_BACKOFF_SECONDS": "1"}


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_the_doc_quotes_the_example_files_whole() -> None:
    blocks = code_blocks(DOC.read_text(), "python")
    assert SCRIPT.read_text() in blocks
    assert RECEIVER.read_text() in blocks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def api_url(e2e_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``uvicorn service.main:app`` in a process of its own, on the e2e database and broker."""
    port = free_port()
    env = {
        **os.environ,
        **LOOPBACK,
        "SSAH_DATABASE_URL": e2e_settings.database_url,
        "SSAH_BROKER_URL": e2e_settings.broker_url,
        "SSAH_ARTIFACT_DIR": str(e2e_settings.artifact_dir),
        "SSAH_API_KEY_CACHE_SECONDS": "0",
    }
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def key(factory: sessionmaker[Session]) -> str:
    with factory.begin() as session:
        return create_api_key(session, f"pipeline-{uuid.uuid4().hex[:8]}")


def run(args: list[str], url: str, key: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSAH_SERVER": url, "SSAH_API_KEY": key, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def pipeline(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(SCRIPT), "--git-sha", "0123abc", *SMALL, *args], url, key)


def remote(url: str, key: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = run(
        [sys.executable, "-m", "ssah.cli", "remote", *args, "--wait", "--json", "--poll-interval", "0.3"], url, key
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def loopback_worker(e2e_settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    """A worker process whose webhook sender may call loopback receivers."""
    process = Worker(e2e_settings, tmp_path / "worker.log", env=LOOPBACK)
    yield process.start()
    process.kill()


def test_the_pipeline_passes_then_stops_a_regression(loopback_worker: Worker, api_url: str, key: str) -> None:
    run_name = f"run-{uuid.uuid4().hex[:6]}"
    received: list[tuple[str, dict[str, Any]]] = []
    with Client(api_url, key) as client:
        secret = client.webhooks.rotate_secret()
    receiver = make_server(secret, 0, lambda event, job: received.append((event, job)))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/ssah"
    try:
        # First checkpoint: lenient thresholds, no earlier audit to compare with: exit 0.
        first = pipeline(
            api_url,
            key,
            "--source",
            "builtin:tiny-llama",
            "--run",
            run_name,
            "--step",
            "1000",
            "--max-asr",
            "1",
            "--max-over-refusal",
            "1",
            "--callback-url",
            hook,
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert "gate passed" in first.stdout and "FAIL" not in first.stdout

        with Client(api_url, key) as client:
            (audit,) = client.audits.list(label=f"run:{run_name}")
            (evaluation,) = client.evaluations.list(label=f"run:{run_name}")
            assert audit.raw["labels"] == {"run": run_name, "checkpoint_step": "1000", "git_sha": "0123abc"}
            asr = client.evaluations.scores(evaluation)[0]["metrics"]["safety"]["asr"]
            assert evaluation.gate is not None and evaluation.gate["checks"][0]["value"] == asr
            assert evaluation.gate["passed"] is True

            # The worker's webhook sender delivered both ends, signed with the tenant's secret.
            deadline = time.monotonic() + 30
            while len(received) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert sorted((event, job["id"]) for event, job in received) == sorted(
                [("job.succeeded", audit.id), ("job.succeeded", evaluation.id)]
            )
            deliveries = list(client.webhooks.deliveries(job_id=audit.id))
            assert [(d["status"], d["last_status_code"]) for d in deliveries] == [("succeeded", 204)]

        # Second checkpoint, the same weights: SCU unchanged against the first audit, but an ASR threshold
        # no model meets (the tiny model's ASR is 0 on the built-in sets: a regression stands in as max < 0).
        # The script prints the failed check and exits 3.
        second = pipeline(
            api_url,
            key,
            "--source",
            "builtin:tiny-llama",
            "--run",
            run_name,
            "--step",
            "2000",
            "--max-asr=-0.5",
            "--max-over-refusal",
            "1",
        )
        assert second.returncode == 3, second.stdout + second.stderr
        assert re.search(r"FAIL safety\.asr = ", second.stdout), second.stdout
        assert re.search(r"ok   classes\.SCU\.param_fraction = ", second.stdout), second.stdout
        assert "step 1000: safety" in second.stdout and "step 2000: safety" in second.stdout  # the series

        with Client(api_url, key) as client:
            series = client.series(labels={"run": run_name}, order_by="checkpoint_step")
            assert [p["value"] for p in series["points"]] == ["1000", "2000"]
            assert series["points"][0]["audit_id"] == audit.id
            (transition,) = series["transitions"]
            assert transition["before_audit_id"] == audit.id and transition["comparison_id"] is not None
            model_id = audit.model_id

        # The remote CLI's shell lines of the doc: the same verdicts as exit codes and JSON.
        gate = json.dumps({"classes.SCU.param_fraction": {"max_change": 0.002, "against": audit.id}})
        code, out = remote(
            api_url,
            key,
            "audit",
            "--model-id",
            str(model_id),
            "--samples",
            "8",
            "--gate",
            gate,
            "--label",
            f"run={run_name}",
            "--label",
            "checkpoint_step=2000",
        )
        assert code == 0 and out["job"]["gate"]["passed"] is True, out
        assert out["result"]["classes"]["SCU"]["units"] > 0
        code, out = remote(
            api_url,
            key,
            "eval",
            "--model-id",
            str(model_id),
            "--max-new-tokens",
            "2",
            "--gate",
            json.dumps({"safety.asr": {"max": -0.5}}),
        )
        assert code == 3 and out["job"]["gate"]["passed"] is False, out

        # Deletion through the real API process: a finished job goes with its artifacts; a model goes once
        # no job is queued or running on it, its finished jobs staying.
        artifacts = loopback_worker.settings.artifact_dir
        with Client(api_url, key) as client:
            job_folder = next(artifacts.glob(f"*/jobs/{evaluation.id}"))
            assert any(job_folder.iterdir())
            client.evaluations.delete(evaluation)
            with pytest.raises(NotFound):
                client.evaluations.get(evaluation)
            assert not job_folder.exists()
            with pytest.raises(NotFound):
                client.evaluations.delete(evaluation)
            client.models.delete(str(model_id))
            with pytest.raises(NotFound):
                client.models.get(str(model_id))
            assert client.audits.get(audit).model_id is None  # the finished audit stays, unlinked
    finally:
        receiver.shutdown()

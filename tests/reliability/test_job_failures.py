"""Jobs that cannot succeed fail once, with a message that says why, and the worker carries on.

A model that does not load (corrupt config.json, missing weights) and an artifact store that is full
(a real tmpfs filled to the last byte) each end in ``failed`` after one attempt; nothing half-written
stays referenced, and the next job on the same worker succeeds.
"""

from __future__ import annotations

import errno
import json
import time
import uuid

import sqlalchemy as sa

from service.models import Job, UnitMap
from tests.e2e.conftest import poll
from tests.reliability.conftest import Stack
from worker.runner import out_of_space

SETTLE_SECONDS = 3  # > one reconciler round (2 s): a failed job must not be picked up again


def unit_maps(stack: Stack, job_id: str) -> int:
    with stack.factory() as session:
        return len(session.scalars(sa.select(UnitMap.id).where(UnitMap.job_id == uuid.UUID(job_id))).all())


def audit(client, model_id: str) -> str:
    r = client.post("/v1/audits", json={"model_id": model_id, "samples": 4})
    assert r.status_code == 202, r.text
    return r.headers["Location"]


def register(client, name: str, source: str) -> str:
    r = client.post("/v1/models", json={"name": name, "source": source})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_model_that_fails_to_load_fails_once_and_the_worker_runs_the_next_job(stack: Stack, client, model_id, worker):
    corrupt = stack.models / f"corrupt-{uuid.uuid4().hex[:6]}"
    corrupt.mkdir()
    (corrupt / "config.json").write_text('{"model_type": "llama", "hidden_size": ')  # cut off mid-file
    no_weights = stack.models / f"no-weights-{uuid.uuid4().hex[:6]}"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": 64,
            }
        )
    )
    pid = worker.process.pid

    for name, directory in [("corrupt", corrupt), ("no-weights", no_weights)]:
        location = audit(client, register(client, name, str(directory)))
        job = poll(client, location, {}, timeout=60, worker=worker)
        assert (job["status"], job["attempts"]) == ("failed", 1), job
        assert "could not load model" in job["error"] and str(directory) in job["error"], job["error"]

    time.sleep(SETTLE_SECONDS)
    assert client.get(location).json()["attempts"] == 1  # not retried
    job = poll(client, audit(client, model_id), {}, timeout=60, worker=worker)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), stack.logs()
    assert worker.process.pid == pid and worker.process.poll() is None


def fill(path) -> None:
    """Write ``path`` until the filesystem under it has no byte left."""
    with open(path, "wb", buffering=0) as ballast:  # unbuffered: nothing left to fail at close
        for block in (1 << 20, 4096, 1):
            try:
                while ballast.write(b"\0" * block):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_full_artifact_store_fails_the_job_clearly_and_a_resubmit_succeeds_once_space_is_freed(
    stack: Stack, client, model_id, worker, tenant
):
    assert stack.artifacts.mounted, f"mount -t tmpfs is needed for this test: {stack.artifacts.why_not}"
    ballast = stack.artifacts.path / "ballast"
    try:
        fill(ballast)
        location = audit(client, model_id)
        job = poll(client, location, {}, timeout=60, worker=worker)
    finally:
        ballast.unlink()
    assert (job["status"], job["attempts"]) == ("failed", 1), job
    assert "artifact store is out of space" in job["error"], job["error"]
    assert unit_maps(stack, job["id"]) == 0  # no result points at a half-written artifact
    assert not (stack.artifacts.path / str(tenant[0]) / "jobs" / job["id"]).exists()  # and none is left behind
    assert client.get(f"{location}/unit-map").status_code == 409
    time.sleep(SETTLE_SECONDS)
    with stack.factory() as session:
        assert session.get(Job, uuid.UUID(job["id"])).attempts == 1

    again = poll(client, audit(client, model_id), {}, timeout=60, worker=worker)
    assert (again["status"], again["attempts"]) == ("succeeded", 1), stack.logs()
    assert unit_maps(stack, again["id"]) == 1
    assert client.get(f"/v1/audits/{again['id']}/unit-map/artifact").status_code == 200


def test_out_of_space_is_recognised_through_the_libraries_that_wrap_it():
    wrapped = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space(wrapped) and out_of_space(OSError(errno.EDQUOT, "quota"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as exc:
            raise ValueError("could not write") from exc
    except ValueError as exc:
        assert out_of_space(exc)
    assert not out_of_space(OSError(errno.ENOENT, "missing")) and not out_of_space(ValueError("bad"))

"""Artifact stores, the reconciler, the embedded worker and the serve mode switch."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import fsspec
import pytest
import sqlalchemy as sa

from service.models import Job, UnitMap, utcnow
from service.queue import make_celery, send_job
from service.settings import Settings
from ssah.commands.serve import is_embedded
from tests.worker.conftest import add_job, add_model, reload
from worker.embedded import EmbeddedWorker
from worker.reconciler import broker_job_ids, broker_messages, reconcile
from worker.store import FsspecStore, LocalStore, make_store


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_store_replaces_artifacts_and_fetches_them_back(kind, tmp_path):
    store = (
        LocalStore(tmp_path / "a")
        if kind == "local"
        else FsspecStore(f"memory://ssah-{uuid.uuid4().hex}", tmp_path / "scratch")
    )
    with store.scratch() as scratch:
        folder = Path(scratch) / "unit_map"
        folder.mkdir()
        (folder / "summary.json").write_text('{"v": 1}')
        (folder / "old.bin").write_text("x")
        store.put(folder, "t/jobs/j/unit_map")
    with store.scratch() as scratch:
        folder = Path(scratch) / "unit_map"
        folder.mkdir()
        (folder / "summary.json").write_text('{"v": 2}')
        uri = store.put(folder, "t/jobs/j/unit_map")  # a re-run: replaces, leaves nothing of the first
        fetched = store.fetch("t/jobs/j/unit_map", Path(scratch))
        assert sorted(p.name for p in fetched.iterdir()) == ["summary.json"]
        assert json.loads((fetched / "summary.json").read_text()) == {"v": 2}
    assert uri == ("t/jobs/j/unit_map" if kind == "local" else store.url("t/jobs/j/unit_map"))
    store.delete_prefix("t/jobs/j/")
    with pytest.raises(FileNotFoundError):
        store.fetch("t/jobs/j/unit_map", tmp_path)


def test_make_store_follows_artifact_url(tmp_path):
    assert isinstance(make_store(Settings(artifact_dir=tmp_path)), LocalStore)
    store = make_store(Settings(artifact_dir=tmp_path, artifact_url="memory://bucket/prefix"))
    assert isinstance(store, FsspecStore) and store.url("k") == "memory://bucket/prefix/k"
    assert fsspec.filesystem("memory") is store.fs


def test_audit_through_an_fsspec_store_stores_its_uri(db, tenant, settings, factory):
    from worker import jobs
    from worker.runner import run_job

    store = FsspecStore(f"memory://ssah-{uuid.uuid4().hex}", Path(settings.artifact_dir) / ".scratch")
    job_id = add_job(db, tenant, "audit", {"samples": 2}, add_model(db, tenant))
    assert run_job(job_id, "audit", jobs.audit, settings=settings, factory=factory, store=store) == "succeeded"
    uri = db.scalars(sa.select(UnitMap.artifact_uri).where(UnitMap.job_id == job_id)).one()
    assert uri == store.url(f"{tenant}/jobs/{job_id}/unit_map.zip") and store.fs.isfile(uri)


def test_reconciler_resends_only_what_the_broker_lost(db, tenant, settings, redis_client):
    celery = make_celery(settings)
    old = utcnow() - timedelta(minutes=10)
    lost, held, orphan, dead, alive = (add_job(db, tenant, "audit", {}) for _ in range(5))
    db.execute(sa.update(Job).where(Job.id.in_([lost, held])).values(enqueued_at=old))
    db.execute(sa.update(Job).where(Job.id.in_([orphan, dead, alive])).values(status="running", attempts=1))
    db.execute(sa.update(Job).where(Job.id.in_([orphan, dead])).values(updated_at=old))
    db.commit()
    send_job(celery, job_id=held, kind="audit")  # the broker still has this one
    assert str(held) in broker_job_ids(settings.broker_url)
    # A worker killed mid-job: its message sits unacked until the visibility timeout (hours).
    redis_client.hset("unacked", "tag-of-the-dead-worker", json.dumps({"body": str(dead), "queue": "gpu"}))
    redis_client.hset("unacked", "tag-of-the-live-worker", json.dumps({"body": str(alive), "queue": "gpu"}))

    counts = reconcile(db, celery=celery, settings=settings)
    db.commit()
    assert counts == {"sent": 0, "resent": 1, "requeued": 2, "webhooks": 0}
    waiting, _ = broker_messages(settings.broker_url)
    assert waiting >= {str(lost), str(held), str(orphan), str(dead)}  # the dead worker's job runs again now
    assert str(alive) not in waiting  # its worker is alive (fresh heartbeat)
    assert redis_client.llen("gpu") == 4
    assert reconcile(db, celery=celery, settings=settings) == {"sent": 0, "resent": 0, "requeued": 0, "webhooks": 0}
    assert broker_job_ids("memory://") is None


def test_embedded_worker_runs_queued_jobs_oldest_first(db, tenant, settings, factory):
    model_id = add_model(db, tenant)
    first, second = add_job(db, tenant, "audit", {"samples": 2}, model_id), add_job(db, tenant, "audit", {}, None)
    embedded = EmbeddedWorker(settings, factory)
    assert embedded.run_one() is True
    assert reload(db, first).status == "succeeded" and reload(db, second).status == "queued"
    assert embedded.run_one() is True
    job = reload(db, second)
    assert (job.status, job.error) == ("failed", f"job {second} has no model (was it deleted?)")
    assert embedded.run_one() is False


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        (None, {}, True),
        (None, {"SSAH_DATABASE_URL": "postgresql://x"}, False),
        (None, {"SSAH_BROKER_URL": "r"}, False),
        (True, {"SSAH_DATABASE_URL": "postgresql://x"}, True),
        (False, {}, False),
    ],
)
def test_serve_is_embedded_only_without_configuration(flag, environ, expected):
    assert is_embedded(flag, environ) is expected

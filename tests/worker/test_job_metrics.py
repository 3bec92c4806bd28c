"""A job's log lines carry its id and tenant; the ssah_worker_* metrics follow its attempts and outcome."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import torch
from prometheus_client import REGISTRY

from service.logs import JsonFormatter
from tests.worker.conftest import add_job, add_model, reload
from worker.runner import JobRun, run_job

deep = logging.getLogger("ssah_engine.deep")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _succeed(run: JobRun) -> None:
    deep.info("working on it")
    run.succeed(lambda session: None)


def _break(run: JobRun) -> None:
    raise RuntimeError("boom")


def test_job_log_lines_carry_the_job_and_tenant_id(db, tenant, settings, factory, store, json_lines):
    import json

    job_id = add_job(db, tenant, "audit", {})
    assert run_job(job_id, "audit", _succeed, settings=settings, factory=factory, store=store) == "succeeded"
    deep.info("between jobs")
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    working = [line for line in lines if line["message"] == "working on it"]
    assert len(working) == 1, lines
    assert working[0]["job_id"] == str(job_id) and working[0]["tenant_id"] == str(tenant)
    assert "request_id" not in working[0]
    started = [line for line in lines if line["logger"] == "worker.runner" and "started" in line["message"]]
    assert started and started[0]["job_id"] == str(job_id)
    between = [line for line in lines if line["message"] == "between jobs"]
    assert between and "job_id" not in between[0] and "tenant_id" not in between[0]


def test_worker_metrics_count_outcomes_attempts_and_durations(db, tenant, settings, factory, store):
    before = {
        "ok": value("ssah_worker_jobs_total", kind="audit", outcome="succeeded"),
        "failed": value("ssah_worker_jobs_total", kind="audit", outcome="failed"),
        "skipped": value("ssah_worker_jobs_total", kind="audit", outcome="skipped"),
        "attempts": value("ssah_worker_job_attempts_total", kind="audit"),
        "durations": value("ssah_worker_job_duration_seconds_count", kind="audit"),
    }
    done = add_job(db, tenant, "audit", {})
    assert run_job(done, "audit", _succeed, settings=settings, factory=factory, store=store) == "succeeded"
    broken = add_job(db, tenant, "audit", {})
    assert run_job(broken, "audit", _break, settings=settings, factory=factory, store=store) == "failed"
    assert run_job(done, "audit", _succeed, settings=settings, factory=factory, store=store) == "skipped"
    assert value("ssah_worker_jobs_total", kind="audit", outcome="succeeded") == before["ok"] + 1
    assert value("ssah_worker_jobs_total", kind="audit", outcome="failed") == before["failed"] + 1
    assert value("ssah_worker_jobs_total", kind="audit", outcome="skipped") == before["skipped"] + 1
    assert value("ssah_worker_job_attempts_total", kind="audit") == before["attempts"] + 2
    assert value("ssah_worker_job_duration_seconds_count", kind="audit") == before["durations"] + 2
    assert reload(db, broken).status == "failed"


def test_a_retried_attempt_counts_as_a_retry(db, tenant, settings, factory, store):
    retries = value("ssah_worker_job_retries_total", kind="audit")
    job_id = add_job(db, tenant, "audit", {})
    assert run_job(job_id, "audit", _break, settings=settings, factory=factory, store=store) == "failed"
    assert value("ssah_worker_job_retries_total", kind="audit") == retries
    job = reload(db, job_id)
    job.status, job.attempts = "running", 1  # as if its worker died mid-job and the message came back
    db.commit()
    assert run_job(job_id, "audit", _succeed, settings=settings, factory=factory, store=store, takeover=True) == (
        "succeeded"
    )
    assert value("ssah_worker_job_retries_total", kind="audit") == retries + 1


def test_model_loads_are_timed(db, tenant, settings, factory, store):
    loads = value("ssah_worker_model_load_seconds_count")
    model_id = add_model(db, tenant)

    def load(run: JobRun) -> None:
        run.model(fresh=True)
        run.succeed(lambda session: None)

    job_id = add_job(db, tenant, "audit", {"model_id": str(model_id)}, model_id)
    assert run_job(job_id, "audit", load, settings=settings, factory=factory, store=store) == "succeeded", reload(
        db, job_id
    ).error
    assert value("ssah_worker_model_load_seconds_count") == loads + 1
    assert value("ssah_worker_model_load_seconds_sum") > 0


def test_the_gpu_memory_peak_is_recorded_when_cuda_is_there(db, tenant, settings, factory, store, monkeypatch):
    if not torch.cuda.is_available():  # the wiring, on CPU: CUDA's answers stood in
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 12345)
    job_id = add_job(db, tenant, "comparison", {})
    assert run_job(job_id, "comparison", _succeed, settings=settings, factory=factory, store=store) == "succeeded"
    peak = REGISTRY.get_sample_value("ssah_worker_gpu_memory_peak_bytes", {"kind": "comparison"})
    assert peak is not None and peak > 0


def test_no_gpu_gauge_without_cuda(db, tenant, settings, factory, store, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kind = "probe"
    if REGISTRY.get_sample_value("ssah_worker_gpu_memory_peak_bytes", {"kind": kind}) is not None:
        pytest.fail("an earlier test set the probe gauge; this test needs it unset")
    job_id = add_job(db, tenant, kind, {})
    assert run_job(job_id, kind, _succeed, settings=settings, factory=factory, store=store) == "succeeded"
    assert REGISTRY.get_sample_value("ssah_worker_gpu_memory_peak_bytes", {"kind": kind}) is None

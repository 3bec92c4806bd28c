"""ssah_client against the real app served over HTTP on PostgreSQL: resources, waiting, pages, files, errors, retries."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

import ssah_client.client
from ssah_client import (
    AsyncClient,
    Client,
    Conflict,
    ContentTooLarge,
    Dataset,
    Job,
    JobNotSucceeded,
    Model,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from tests.client.conftest import Server, Tenant_, set_job, succeed


def test_models_register_get_list_and_ensure(client: Client):
    smol = client.models.create("smol", "builtin:smollm2")
    assert isinstance(smol, Model) and smol.source == "builtin:smollm2" and smol.created_at is not None
    assert client.models.get(smol.id) == smol
    with pytest.raises(Conflict) as taken:
        client.models.create("smol", "builtin:smollm2")
    assert taken.value.status == 409 and "smol" in taken.value.detail
    assert client.models.ensure("smol", "builtin:smollm2").id == smol.id  # registered before: reused
    with pytest.raises(ValueError, match="registered with source"):
        client.models.ensure("smol", "org/other")


def test_lists_follow_every_page(client: Client):
    ids = [client.models.create(f"m{i}", "builtin:smollm2").id for i in range(5)]
    listed = [model.id for model in client.models.list(page_size=2)]  # three pages
    assert listed == ids[::-1]  # newest first, each once
    first = client.audits.page(limit=1)
    assert first.total == 0 and first.items == [] and first.next is None


def test_job_lists_filter_and_paginate(client: Client, factory: sessionmaker[Session]):
    model = client.models.create("smol", "builtin:smollm2")
    jobs = [client.audits.create(model_id=model.id) for _ in range(3)]
    succeed(factory, jobs[0].id)
    assert [j.id for j in client.audits.list(page_size=1)] == [j.id for j in jobs[::-1]]
    assert [j.id for j in client.audits.list(status="succeeded")] == [jobs[0].id]
    assert [j.id for j in client.jobs.list(kind="audit", status="queued", page_size=1)] == [jobs[2].id, jobs[1].id]
    page = client.audits.page(limit=2)
    assert page.total == 3 and len(page.items) == 2 and page.next is not None


def test_create_sends_one_idempotency_key_per_call(client: Client):
    model = client.models.create("smol", "builtin:smollm2")
    first = client.audits.create(model_id=model.id, samples=16)
    second = client.audits.create({"model_id": model.id, "samples": 16})
    assert isinstance(first, Job) and first.status == "queued" and first.params["samples"] == 16
    assert first.id != second.id  # a fresh key per call: two calls, two jobs
    again = client.audits.create(model_id=model.id, samples=16, idempotency_key="nightly-1")
    replay = client.audits.create(model_id=model.id, samples=16, idempotency_key="nightly-1")
    assert replay.id == again.id  # a retried call replays the first answer


def test_wait_polls_until_terminal_and_reports_each_change(client: Client, factory: sessionmaker[Session]):
    model = client.models.create("smol", "builtin:smollm2")
    job = client.audits.create(model_id=model.id)
    seen: list[tuple[str, float]] = []
    steps = iter(
        [
            lambda: set_job(factory, job.id, status="running", progress=0.25, progress_message="scoring"),
            lambda: None,  # nothing changed: the poll is a 304 and on_progress is not called
            lambda: set_job(factory, job.id, progress=0.75),
            lambda: succeed(factory, job.id),
        ]
    )

    def on_progress(current: Job) -> None:
        seen.append((current.status, current.progress))

    def advance(seconds: float) -> None:
        next(steps, lambda: None)()

    ssah_client.client._pause, saved = advance, ssah_client.client._pause
    try:
        done = client.wait(job, timeout=30, on_progress=on_progress)
    finally:
        ssah_client.client._pause = saved
    assert done.succeeded and done.terminal and done.progress == 1.0
    assert seen == [("queued", 0.0), ("running", 0.25), ("running", 0.75), ("succeeded", 1.0)]
    assert done.gate_passed  # no gate: passes
    assert client.audits.unit_map(done)["classes"]["SCU"]["units"] == 12


def test_wait_times_out_with_the_last_state(client: Client):
    model = client.models.create("smol", "builtin:smollm2")
    job = client.audits.create(model_id=model.id)
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait(job.id, timeout=0.05, poll_interval=0.01)
    assert timed_out.value.job.id == job.id and timed_out.value.job.status == "queued"


def test_cancel_and_its_conflict_once_finished(client: Client, factory: sessionmaker[Session]):
    model = client.models.create("smol", "builtin:smollm2")
    job = client.evaluations.create(model_id=model.id)
    cancelled = client.evaluations.cancel(job)
    assert cancelled.status == "cancelled"
    with pytest.raises(Conflict) as finished:
        client.jobs.cancel(job.id)
    assert finished.value.type == "urn:ssah:problem:conflict"


def test_problems_become_typed_errors(client: Client, server: Server):
    model = client.models.create("smol", "builtin:smollm2")
    with pytest.raises(NotFound) as missing:
        client.audits.get(str(uuid.uuid4()))
    assert missing.value.status == 404 and missing.value.request_id
    with pytest.raises(ValidationFailed) as invalid:
        client.audits.create(model_id=model.id, cuts={"ru": 0.1, "scu": 2.0, "ucu": 0.1})
    assert [e["loc"] for e in invalid.value.errors] == ["body.cuts.scu"]
    queued = client.audits.create(model_id=model.id)
    with pytest.raises(JobNotSucceeded) as not_ready:
        client.audits.unit_map(queued)
    assert isinstance(not_ready.value, Conflict) and not_ready.value.job_status == "queued"
    with Client(server.url, "ssah_not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.models.get(model.id)


def test_upload_and_its_size_limit(make_server, tenant: Tenant_, tmp_path: Path):
    server = make_server(max_upload_bytes=2000)
    small = tmp_path / "harmful.jsonl"
    small.write_text('{"prompt": "p", "response": "r"}\n' * 3)
    with Client(server.url, tenant.key) as client:
        dataset = client.datasets.upload(small, name="harmful")
        assert isinstance(dataset, Dataset) and dataset.rows == 3 and dataset.format == "jsonl"
        assert client.datasets.get(dataset.id) == dataset
        assert [d.id for d in client.datasets.list()] == [dataset.id]
        big = tmp_path / "big.txt"
        big.write_text("x" * 100 + "\n" * 3000)
        with pytest.raises(ContentTooLarge) as too_large:
            client.datasets.upload(big)
        assert too_large.value.limit == "max_upload_bytes" and too_large.value.limit_value == 2000


def test_downloads_stream_to_files(client: Client, server: Server, tenant: Tenant_, factory, tmp_path: Path):
    model = client.models.create("smol", "builtin:smollm2")
    artifact = server.settings.artifact_dir / str(tenant.id) / "unit_maps" / "map.safetensors"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(bytes(range(256)) * 1000)
    audit = client.audits.create(model_id=model.id)
    succeed(factory, audit.id, artifact_uri=str(artifact.relative_to(server.settings.artifact_dir)))
    out = tmp_path / "out"
    out.mkdir()
    into_dir = client.audits.download_unit_map(audit, out)
    assert into_dir == out / "map.safetensors" and into_dir.read_bytes() == artifact.read_bytes()
    named = client.audits.download_unit_map(audit.id, out / "copy.bin")
    assert named.read_bytes() == artifact.read_bytes()
    with pytest.raises(NotFound):  # an audit's id is no fine-tune's
        client.finetunes.download_model(audit, out)
    assert sorted(p.name for p in out.iterdir()) == ["copy.bin", "map.safetensors"]  # nothing from the 404


def test_rate_limited_calls_wait_for_retry_after(make_server, tenant: Tenant_, broker_url: str):
    server = make_server(rate_limit_per_minute=2)
    waits: list[float] = []

    def reset_the_window(seconds: float) -> None:  # instead of sleeping a minute, forget the count
        waits.append(seconds)
        redis.Redis.from_url(broker_url).flushdb()

    saved, ssah_client.client._pause = ssah_client.client._pause, reset_the_window
    try:
        with Client(server.url, tenant.key) as client:
            model = client.models.create("smol", "builtin:smollm2")
            for _ in range(3):  # the third call is over the limit, waits, and succeeds
                assert client.models.get(model.id).id == model.id
            assert len(waits) == 1 and 0 < waits[0] <= 60
        redis.Redis.from_url(broker_url).flushdb()
        with Client(server.url, tenant.key, retry=RetryPolicy(retries=0)) as impatient:
            impatient.models.get(model.id)
            impatient.models.get(model.id)
            with pytest.raises(RateLimited) as limited:
                impatient.models.get(model.id)
            assert limited.value.status == 429 and limited.value.retry_after is not None
            assert limited.value.retry_after > 0
    finally:
        ssah_client.client._pause = saved


def test_unavailable_database_is_retried_then_raised(make_server, tenant: Tenant_):
    server = make_server(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    waits: list[float] = []
    saved, ssah_client.client._pause = ssah_client.client._pause, waits.append
    try:
        with Client(server.url, tenant.key, retry=RetryPolicy(retries=2)) as client:
            with pytest.raises(Unavailable) as down:
                client.audits.create(model_id=str(uuid.uuid4()))  # a create: retried under its key
            assert down.value.retry_after == 2 and down.value.slug == "database-unavailable"
    finally:
        ssah_client.client._pause = saved
    assert waits == [2.0, 2.0]


def test_async_client(server: Server, tenant: Tenant_, factory: sessionmaker[Session]):
    async def scenario() -> None:
        async with AsyncClient(server.url, tenant.key, poll_interval=0.01) as client:
            model = await client.models.ensure("smol", "builtin:smollm2")
            jobs = [await client.probes.create(model_id=model.id) for _ in range(3)]
            assert [j.id async for j in client.probes.list(page_size=2)] == [j.id for j in jobs[::-1]]
            seen: list[str] = []

            async def on_progress(job: Job) -> None:
                seen.append(job.status)
                if job.status == "queued":
                    await asyncio.to_thread(succeed, factory, job.id)

            done = await client.wait(jobs[0], timeout=30, on_progress=on_progress)
            assert done.succeeded and seen == ["queued", "succeeded"]
            with pytest.raises(NotFound):
                await client.probes.result(str(uuid.uuid4()))
            cancelled = await client.probes.cancel(jobs[1])
            assert cancelled.status == "cancelled"

    asyncio.run(scenario())


def test_pipeline_calls_labels_series_and_webhooks(client: Client, server: Server, tenant: Tenant_, factory):
    model = client.models.ensure("ck-1000", "builtin:smollm2", labels={"run": "r1", "checkpoint_step": "1000"})
    assert model.labels == {"run": "r1", "checkpoint_step": "1000"}
    audit = client.audits.create(model_id=model.id)
    succeed(factory, audit.id)
    series = client.series(labels={"run": "r1"}, order_by="checkpoint_step", compare=False)
    assert [(p["value"], p["audit_id"]) for p in series["points"]] == [("1000", audit.id)]
    assert client.webhooks.secret_status()["configured"] is False
    secret = client.webhooks.rotate_secret()
    assert secret and client.webhooks.secret_status()["configured"] is True
    assert list(client.webhooks.deliveries()) == []

    async def scenario() -> None:
        async with AsyncClient(server.url, tenant.key) as aclient:
            again = await aclient.models.ensure("ck-1000", "builtin:smollm2", labels={"run": "r1"})
            assert again.id == model.id  # reused: same name and source
            assert (await aclient.series(labels={"run": "r1"}, order_by="checkpoint_step"))["points"]
            assert await aclient.webhooks.rotate_secret() != secret  # rotated: the old one stops
            assert (await aclient.webhooks.secret_status())["configured"] is True
            assert [d async for d in aclient.webhooks.deliveries()] == []

    asyncio.run(scenario())

"""PostgreSQL and Redis restarted under load: clients get 503s (never 500s or hangs), then everything recovers.

The database is the source of truth: while it is down the API answers 503 problem+json with
Retry-After and stores nothing; once it is back, polls answer 200/304 and the job completes. Redis
keeps nothing on disk: a restart drops queued and unacknowledged messages, and the workers'
reconciler sends them again, so every job still runs to success exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Self

import httpx
import redis
import sqlalchemy as sa

from service.models import UnitMap
from tests.e2e.conftest import poll
from tests.reliability.conftest import Stack, audit_held_running, tenant_jobs
from tests.reliability.services import wait_for
from worker.reconciler import broker_job_ids

POLLERS = 6
ANSWER_BOUND_SECONDS = 5.0  # no answer may take longer, outage or not
OUTAGE_SECONDS = 3.0  # at least; the outage lasts until the running job's final write has failed


def unit_maps(stack: Stack, job_id: str) -> int:
    with stack.factory() as session:
        return len(session.scalars(sa.select(UnitMap.id).where(UnitMap.job_id == uuid.UUID(job_id))).all())


@dataclass
class Answer:
    sent: float
    took: float
    status: int
    content_type: str
    retry_after: str | None


class Pollers:
    """``POLLERS`` dashboard-like clients polling one job with If-None-Match, each answer recorded."""

    def __init__(self, base_url: str, key: str, path: str):
        self.base_url, self.key, self.path = base_url, key, path
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(POLLERS)]

    def run(self) -> None:
        etag = None
        with httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=ANSWER_BOUND_SECONDS * 2
        ) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.get(self.path, headers={"If-None-Match": etag} if etag else {})
                except httpx.HTTPError as exc:  # a hang or a dropped connection: recorded as a failure
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.answers.append(
                    Answer(
                        sent,
                        time.monotonic() - sent,
                        r.status_code,
                        r.headers.get("content-type", ""),
                        r.headers.get("retry-after"),
                    )
                )
                if r.status_code == 200:
                    etag = r.headers["etag"]
                self.stop.wait(0.1)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=ANSWER_BOUND_SECONDS * 3)


def test_postgres_restart_while_clients_poll_gives_503_then_recovers_and_the_job_completes(
    stack: Stack, client, tenant, model_id, worker
):
    with (
        audit_held_running(stack, worker, client, {"model_id": model_id, "samples": 16}) as job_id,
        Pollers(stack.api.url, tenant[1], f"/v1/jobs/{job_id}") as pollers,
    ):
        time.sleep(0.5)
        stack.pg.stop("fast")
        down_at = time.monotonic()
        try:
            time.sleep(OUTAGE_SECONDS)
            # A submission while the database is down: 503, and no job, no message, no key remembered.
            posted = client.post(
                "/v1/audits", json={"model_id": model_id, "samples": 4}, headers={"Idempotency-Key": "during-outage"}
            )
            # The worker computed on; marking the job succeeded fails, so Celery retries the task.
            wait_for(
                lambda: "retry: Retry in" in worker.log_path.read_text(errors="replace")[worker.offset :],
                timeout=60,
                what="the task retried after its final write failed",
                interval=0.2,
            )
        finally:
            restart_at = time.monotonic()  # PostgreSQL accepts connections before pg_ctl says so
            stack.pg.start()
        up_at = time.monotonic()
        final = poll(client, f"/v1/jobs/{job_id}", {}, worker=worker, timeout=90)

    assert posted.status_code == 503, posted.text
    assert posted.headers["content-type"].startswith("application/problem+json")
    assert posted.headers["retry-after"] and posted.json()["type"] == "urn:ssah:problem:database-unavailable"

    answers = pollers.answers
    assert pollers.errors == [], pollers.errors[:5]
    assert {a.status for a in answers} <= {200, 304, 503}, sorted({a.status for a in answers})
    assert max(a.took for a in answers) < ANSWER_BOUND_SECONDS
    during = [a for a in answers if down_at + 0.5 < a.sent and a.sent + a.took < restart_at]
    assert during and all(a.status == 503 for a in during), [(a.sent - down_at, a.took, a.status) for a in during]
    assert all(
        a.content_type.startswith("application/problem+json") and a.retry_after for a in answers if a.status == 503
    )
    after = [a for a in answers if a.sent > up_at]
    assert after and all(a.status in (200, 304) for a in after), [a.status for a in after]

    # The job survived the outage: its retry took it back and ran it again, once.
    assert (final["status"], final["attempts"], final["error"]) == ("succeeded", 2, None), stack.logs()
    assert unit_maps(stack, job_id) == 1
    assert [str(job.id) for job in tenant_jobs(stack, tenant[0])] == [job_id]  # the 503'd POST left nothing,
    assert "does not exist; message dropped" not in worker.log()  # not even a message for a job never stored
    assert (
        client.post(
            "/v1/audits", json={"model_id": model_id, "samples": 4}, headers={"Idempotency-Key": "during-outage"}
        ).status_code
        == 202
    )  # the key is free
    print(
        f"\npolls: {len(answers)}, 503 during the outage: {len(during)}, "
        f"slowest answer {max(a.took for a in answers):.2f}s, job attempts {final['attempts']}"
    )


def test_redis_restart_with_jobs_queued_and_running_loses_none_and_runs_each_once(
    stack: Stack, client, tenant, model_id, worker
):
    with audit_held_running(stack, worker, client, {"model_id": model_id, "samples": 32}) as running_id:
        running = f"/v1/audits/{running_id}"
        queued = [
            client.post("/v1/audits", json={"model_id": model_id, "samples": 4}).headers["Location"] for _ in range(3)
        ]
        ids = {location.rsplit("/", 1)[1] for location in [running, *queued]}
        assert ids <= broker_job_ids(stack.redis.url)  # one delivered (unacked), three waiting

        stack.redis.stop()  # a crash: every message is gone
        try:
            # The API keeps answering while the broker is down; a new job is accepted into the outbox.
            r = client.post("/v1/audits", json={"model_id": model_id, "samples": 4})
            assert r.status_code == 202 and r.json()["enqueued_at"] is None, r.text
            queued.append(r.headers["Location"])
            assert client.get(running).status_code == 200
        finally:
            stack.redis.start()
        assert broker_job_ids(stack.redis.url) == set()

    for location in [running, *queued]:
        job = poll(client, location, {}, worker=worker, timeout=90)
        assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 1, None), (job, stack.logs())
        assert unit_maps(stack, job["id"]) == 1
    assert len(tenant_jobs(stack, tenant[0])) == 5
    assert redis.Redis.from_url(stack.redis.url).ping()

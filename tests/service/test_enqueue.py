"""The outbox: a job committed while the broker is down is enqueued later by enqueue_pending."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.jobs import enqueue_pending
from service.models import Job
from service.queue import make_celery
from service.settings import Settings
from tests.service.conftest import Tenant_

DEAD_BROKER = "redis://127.0.0.1:1/0"


def test_post_with_broker_down_answers_202_and_enqueue_pending_catches_up(
    make_app: Callable[..., FastAPI], db: Session, alice: Tenant_, redis_client: redis.Redis, broker_url: str
):
    with TestClient(make_app(broker_url=DEAD_BROKER)) as client:
        model = client.post(
            "/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=alice.headers
        ).json()["id"]
        r = client.post("/v1/audits", json={"model_id": model}, headers=alice.headers)
        assert r.status_code == 202
        job_id = uuid.UUID(r.json()["id"])
        cancelled = client.post("/v1/audits", json={"model_id": model}, headers=alice.headers).json()["id"]
        assert client.post(f"/v1/audits/{cancelled}/cancel", headers=alice.headers).status_code == 200
    db.expire_all()
    assert db.get(Job, job_id).enqueued_at is None
    assert redis_client.llen("gpu") == 0

    assert enqueue_pending(db, celery=make_celery(Settings(broker_url=DEAD_BROKER))) == 0
    assert db.get(Job, job_id).enqueued_at is None

    assert enqueue_pending(db, celery=make_celery(Settings(broker_url=broker_url))) == 1  # not the cancelled one
    db.commit()
    assert db.get(Job, job_id).enqueued_at is not None
    messages = [json.loads(m) for m in redis_client.lrange("gpu", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [("ssah.audit", repr([str(job_id)]))]
    assert enqueue_pending(db, celery=make_celery(Settings(broker_url=broker_url))) == 0  # sent once only
    assert redis_client.llen("gpu") == 1

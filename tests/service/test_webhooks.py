"""Webhooks: signed POSTs of a finished job to a real receiver on loopback, retries, records, SSRF refusals."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service import webhooks
from service.models import JobStatus
from service.settings import Settings
from tests.service.conftest import SUMMARY, Tenant_
from worker import results
from worker.lifecycle import claim_job, finish_job


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status of ``script``."""

    def __init__(self, script: list[int]):
        self.script, self.requests = list(script), []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ssah?run=7"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[list[int]], Receiver]]:
    started: list[Receiver] = []

    def start(script: list[int]) -> Receiver:
        started.append(Receiver(script))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


LOOPBACK = {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_backoff_seconds": 0.0, "webhook_timeout_seconds": 5.0}


@pytest.fixture
def loopback_client(make_app: Callable[..., FastAPI], redis_client: Any) -> Iterator[TestClient]:
    with TestClient(make_app(**LOOPBACK), raise_server_exceptions=False) as client:
        yield client


def secret_for(client: TestClient, tenant: Tenant_) -> str:
    r = client.post("/v1/webhook-secret", headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json()["secret"].startswith("whsec_")
    return r.json()["secret"]


def submit_audit(client: TestClient, tenant: Tenant_, model_id: str, **extra: Any) -> str:
    r = client.post("/v1/audits", json={"model_id": model_id, **extra}, headers=tenant.headers)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def finish_audit(factory: sessionmaker[Session], job_id: str, summary: dict = SUMMARY) -> None:
    """End an audit as the worker does: claim it, store its unit map and mark it succeeded in one transaction."""
    claim = claim_job(factory, uuid.UUID(job_id), kind="audit", stale_seconds=120)
    assert claim is not None
    store = lambda s: results.put_unit_map(s, job_id=claim.job_id, summary=summary, artifact_uri="x")  # noqa: E731
    finish_job(factory, claim, JobStatus.succeeded, store=store)


def test_a_receiver_failing_twice_gets_the_signed_job_on_the_third_try(
    loopback_client: TestClient,
    session_factory: sessionmaker[Session],
    alice: Tenant_,
    receiver_factory: Callable[[list[int]], Receiver],
):
    client = loopback_client
    receiver = receiver_factory([500, 503])
    secret = secret_for(client, alice)
    model = client.post("/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=alice.headers).json()
    job_id = submit_audit(client, alice, model["id"], callback_url=receiver.url)
    assert client.get(f"/v1/webhook-deliveries?job_id={job_id}", headers=alice.headers).json()["total"] == 0
    finish_audit(session_factory, job_id)
    settings = Settings(**LOOPBACK)

    assert list(webhooks.deliver_due(session_factory, settings).values()) == ["pending"]
    assert list(webhooks.deliver_due(session_factory, settings).values()) == ["pending"]
    assert list(webhooks.deliver_due(session_factory, settings).values()) == ["succeeded"]
    assert webhooks.deliver_due(session_factory, settings) == {}  # nothing left to send

    assert len(receiver.requests) == 3
    job = client.get(f"/v1/audits/{job_id}", headers=alice.headers).json()
    for request in receiver.requests:
        headers = request["headers"]
        assert request["path"] == "/hooks/ssah?run=7"
        assert headers["SSAH-Event"] == "job.succeeded"
        assert webhooks.verify(secret, headers["SSAH-Signature"], request["body"])
        assert not webhooks.verify(secret, headers["SSAH-Signature"], request["body"] + b" ")
        assert not webhooks.verify("whsec_other", headers["SSAH-Signature"], request["body"])
        assert json.loads(request["body"]) == job  # the same resource as GET of the job
    assert job["status"] == "succeeded" and job["callback_url"] == receiver.url

    page = client.get(f"/v1/webhook-deliveries?job_id={job_id}", headers=alice.headers).json()
    (delivery,) = page["items"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert delivery["last_status_code"] == 200 and delivery["last_error"] is None
    assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None
    assert delivery["id"] == receiver.requests[-1]["headers"]["SSAH-Delivery"]


def test_a_delivery_gives_up_after_max_attempts_and_records_the_last_answer(
    make_app: Callable[..., FastAPI],
    redis_client: Any,
    session_factory: sessionmaker[Session],
    alice: Tenant_,
    bob: Tenant_,
    receiver_factory: Callable[[list[int]], Receiver],
):
    receiver = receiver_factory([500] * 10)
    settings = {**LOOPBACK, "webhook_max_attempts": 3}
    with TestClient(make_app(**settings), raise_server_exceptions=False) as client:
        secret_for(client, alice)
        model = client.post("/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=alice.headers)
        job_id = submit_audit(client, alice, model.json()["id"], callback_url=receiver.url)
        finish_audit(session_factory, job_id)
        outcomes = [webhooks.deliver_due(session_factory, Settings(**settings)) for _ in range(4)]
        assert [list(o.values()) for o in outcomes] == [["pending"], ["pending"], ["failed"], []]
        (delivery,) = client.get(f"/v1/webhook-deliveries?job_id={job_id}", headers=alice.headers).json()["items"]
        assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("failed", 3, 500)
        assert delivery["last_error"] == "the receiver answered 500"
        assert client.get("/v1/webhook-deliveries?status=failed", headers=alice.headers).json()["total"] == 1
        assert client.get("/v1/webhook-deliveries", headers=bob.headers).json()["total"] == 0  # tenant-scoped
    assert len(receiver.requests) == 3


def test_backoff_doubles_and_is_capped():
    settings = Settings(webhook_backoff_seconds=10, webhook_backoff_max_seconds=60)
    assert [webhooks.backoff(settings, n).total_seconds() for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_cancelling_a_queued_job_sends_a_cancelled_event(
    loopback_client: TestClient,
    session_factory: sessionmaker[Session],
    alice: Tenant_,
    alice_model: str,
    receiver_factory: Callable[[list[int]], Receiver],
):
    receiver = receiver_factory([204])
    secret = secret_for(loopback_client, alice)
    job_id = submit_audit(loopback_client, alice, alice_model, callback_url=receiver.url)
    assert loopback_client.post(f"/v1/audits/{job_id}/cancel", headers=alice.headers).status_code == 200
    assert list(webhooks.deliver_due(session_factory, Settings(**LOOPBACK)).values()) == ["succeeded"]
    (request,) = receiver.requests
    assert request["headers"]["SSAH-Event"] == "job.cancelled"
    assert webhooks.verify(secret, request["headers"]["SSAH-Signature"], request["body"])
    assert json.loads(request["body"])["status"] == "cancelled"


def test_a_rotated_secret_signs_from_then_on_and_is_never_shown_again(loopback_client: TestClient, alice: Tenant_):
    assert loopback_client.get("/v1/webhook-secret", headers=alice.headers).json()["configured"] is False
    first, second = secret_for(loopback_client, alice), secret_for(loopback_client, alice)
    assert first != second
    status = loopback_client.get("/v1/webhook-secret", headers=alice.headers).json()
    assert status["configured"] is True and "secret" not in status
    log = loopback_client.get("/v1/audit-log?action=webhook.secret.rotate", headers=alice.headers).json()
    assert log["total"] == 2 and first not in json.dumps(log)


def test_a_callback_needs_a_secret_first(loopback_client: TestClient, alice: Tenant_, alice_model: str):
    r = loopback_client.post(
        "/v1/audits", json={"model_id": alice_model, "callback_url": "http://127.0.0.1:9/x"}, headers=alice.headers
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "body.callback_url"
    assert "POST /v1/webhook-secret" in r.json()["detail"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback address"),
        ("http://localhost/hook", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a link-local address"),
        ("http://10.1.2.3/hook", "10.1.2.3, a private address"),
        ("http://[::ffff:192.168.0.1]/hook", "a private address"),
        ("http://100.64.0.1/hook", "a non-global address"),
        ("http://0.0.0.0/hook", "an unspecified address"),
        ("ftp://example.com/hook", "must be http:// or https://"),
        ("http://user:pw@example.com/hook", "user name or password"),
    ],
)
def test_callbacks_to_internal_addresses_are_refused_at_submission(
    client: TestClient, alice: Tenant_, alice_model: str, url: str, words: str
):
    client.post("/v1/webhook-secret", headers=alice.headers)
    r = client.post("/v1/audits", json={"model_id": alice_model, "callback_url": url}, headers=alice.headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "urn:ssah:problem:callback-url-refused"
    assert body["errors"][0]["loc"] == "body.callback_url"
    assert words in body["detail"], body["detail"]


def test_a_listed_host_may_be_private_and_without_a_star_only_listed_hosts_pass():
    public = lambda host, port: ["93.184.215.14"]  # noqa: E731
    private = lambda host, port: ["10.0.0.7"]  # noqa: E731
    target = webhooks.check_callback_url("https://hooks.example.com/x", allowed_hosts=["*"], resolve=public)
    assert (target.host, target.port, target.path, target.addresses) == (
        "hooks.example.com",
        443,
        "/x",
        ("93.184.215.14",),
    )
    with pytest.raises(webhooks.CallbackRefused, match="resolves to 10.0.0.7, a private address"):
        webhooks.check_callback_url("https://rebind.example.com/x", allowed_hosts=["*"], resolve=private)
    listed = webhooks.check_callback_url("http://ci.internal:8000/x", allowed_hosts=["CI.internal"], resolve=private)
    assert listed.addresses == ("10.0.0.7",)
    with pytest.raises(webhooks.CallbackRefused, match="not in this deployment's SSAH_WEBHOOK_ALLOWED_HOSTS"):
        webhooks.check_callback_url("https://hooks.example.com/x", allowed_hosts=["ci.internal"], resolve=public)
    with pytest.raises(webhooks.CallbackRefused, match="empty: no callbacks"):
        webhooks.check_callback_url("https://hooks.example.com/x", allowed_hosts=[], resolve=public)


def test_the_host_is_checked_again_at_delivery(
    make_app: Callable[..., FastAPI],
    redis_client: Any,
    session_factory: sessionmaker[Session],
    alice: Tenant_,
    alice_model: str,
    receiver_factory: Callable[[list[int]], Receiver],
):
    receiver = receiver_factory([200])
    with TestClient(make_app(**LOOPBACK), raise_server_exceptions=False) as client:
        secret_for(client, alice)
        job_id = submit_audit(client, alice, alice_model, callback_url=receiver.url)
        finish_audit(session_factory, job_id)
        tightened = Settings(**{**LOOPBACK, "webhook_allowed_hosts": ["*"], "webhook_max_attempts": 1})
        assert list(webhooks.deliver_due(session_factory, tightened).values()) == ["failed"]
        (delivery,) = client.get(f"/v1/webhook-deliveries?job_id={job_id}", headers=alice.headers).json()["items"]
    assert receiver.requests == []  # never called
    assert delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("refused: callback host '127.0.0.1' resolves to 127.0.0.1, a loopback")


def test_the_reconciler_sweep_adds_deliveries_for_endings_written_elsewhere(
    loopback_client: TestClient, db: Session, alice: Tenant_, alice_model: str
):
    from tests.service.conftest import set_job

    secret_for(loopback_client, alice)
    job_id = submit_audit(loopback_client, alice, alice_model, callback_url="http://127.0.0.1:9/x")
    set_job(db, job_id, status="failed", error="boom")
    assert webhooks.create_missing_deliveries(db) == 1
    assert webhooks.create_missing_deliveries(db) == 0  # once
    db.commit()
    (delivery,) = loopback_client.get(f"/v1/webhook-deliveries?job_id={job_id}", headers=alice.headers).json()["items"]
    assert (delivery["event"], delivery["status"], delivery["attempts"]) == ("job.failed", "pending", 0)


def test_ssah_keys_rotates_a_webhook_secret(db: Session, alice: Tenant_, monkeypatch: pytest.MonkeyPatch, capsys):
    from service import admin
    from service.models import Tenant

    monkeypatch.setattr(admin, "get_sessionmaker", lambda: lambda: db)
    monkeypatch.setattr(db, "close", lambda: None)
    assert admin.run_keys_action("webhook-secret", tenant="alice") == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("whsec_") and db.get(Tenant, alice.id).webhook_secret == printed
    assert admin.run_keys_action("webhook-secret", tenant="nobody") == 1

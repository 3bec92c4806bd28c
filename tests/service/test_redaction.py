"""No password in a URL reaches a log line: the rate limiter's Redis, the broker, anything logged in the process."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from fastapi.testclient import TestClient

from service.ratelimit import RateLimiter
from service.redact import redact
from tests.service.conftest import Tenant_

SECRET = "s3cr3t-PASSWORD"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
        (f"postgresql+psycopg://ssah:{SECRET}@db/ssah", "postgresql+psycopg://ssah:***@db/ssah"),
        (f"s3://AKIA:{SECRET}@bucket/prefix", "s3://AKIA:***@bucket/prefix"),
        (f"rediss://user:{SECRET}@h/1?ssl_cert_reqs=none", "rediss://user:***@h/1?ssl_cert_reqs=none"),
        (f"redis://h/0?password={SECRET}", "redis://h/0?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),  # nothing to hide
        (f"error at redis://:{SECRET}@h/0: refused", "error at redis://:***@h/0: refused"),
    ],
)
def test_redact_masks_passwords_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_an_unreachable_rate_limit_redis_is_logged_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(f"redis://:{SECRET}@127.0.0.1:1/0", 10, timeout=0.2)
    key = uuid.uuid4()

    async def requests() -> None:
        for _ in range(10):  # past 80 % of the limit every request goes to Redis, which is down
            await limiter.hit(key)

    with caplog.at_level(logging.WARNING):
        asyncio.run(requests())
    assert "unreachable" in caplog.text and "redis://:***@127.0.0.1:1/0" in caplog.text
    assert SECRET not in caplog.text


def test_the_api_redacts_every_log_line_of_its_process(
    make_app, client: TestClient, alice: Tenant_, caplog: pytest.LogCaptureFixture
) -> None:
    # The app installed the record factory; a line logged anywhere (a library, a forgotten call) is masked.
    with caplog.at_level(logging.INFO):
        logging.getLogger("kombu.connection").warning("Cannot connect to %s: refused", f"redis://:{SECRET}@h:6379//")
        logging.getLogger("somewhere").error(f"failed on postgresql://u:{SECRET}@db/x")
    assert SECRET not in caplog.text and caplog.text.count(":***@") == 2


def test_a_broker_with_a_password_that_is_down_leaves_no_password_in_the_logs(
    make_app, alice: Tenant_, alice_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(broker_url=f"redis://:{SECRET}@127.0.0.1:1/0", rate_limit_per_minute=5, broker_timeout_seconds=0.2)
    with caplog.at_level(logging.INFO), TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(5):
            r = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers)
            assert r.status_code == 202, r.text
        assert client.get("/readyz").json()["status"] == "degraded"  # the outbox keeps the jobs
    assert "unreachable" in caplog.text
    assert SECRET not in caplog.text

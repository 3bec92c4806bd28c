"""Rate limiting per API key in Redis: 429 with Retry-After and RateLimit headers; fail-open without Redis."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.ratelimit import RETRY_SECONDS, WINDOW_SECONDS, RateLimiter
from tests.service.conftest import Tenant_


class Clock:
    """A settable clock for the limiter, starting at the beginning of a window."""

    def __init__(self) -> None:
        self.now = (time.time() // WINDOW_SECONDS + 1) * WINDOW_SECONDS

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(make_app: Callable[..., FastAPI], redis_client: redis.Redis) -> Iterator[tuple[TestClient, Clock]]:
    app = make_app(rate_limit_per_minute=3)
    clock = Clock()
    app.state.rate_limiter.clock = clock
    with TestClient(app) as client:
        yield client, clock


def test_requests_past_the_limit_get_429_with_retry_after(
    limited: tuple[TestClient, Clock], alice: Tenant_, bob: Tenant_
):
    client, clock = limited
    clock.now += 15  # 45 s left in the window
    for remaining in (2, 1, 0):
        r = client.get("/v1/jobs", headers=alice.headers)
        assert r.status_code == 200
        assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("3", str(remaining))
        assert r.headers["ratelimit-reset"] == "45" and r.headers["ratelimit-policy"] == "3;w=60"
    r = client.get("/v1/jobs", headers=alice.headers)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["type"], body["limit"], body["limit_value"]) == (
        "urn:ssah:problem:rate-limited",
        "rate_limit_per_minute",
        3,
    )
    assert "rate_limit_per_minute" in body["detail"]
    assert r.headers["retry-after"] == "45" and r.headers["ratelimit-remaining"] == "0"
    # Every route, POSTs included, and X-API-Key alike: the key is what is counted.
    assert (
        client.post(
            "/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers={"X-API-Key": alice.key}
        ).status_code
        == 429
    )
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200  # keys are counted apart
    clock.now += 45  # the next window
    assert client.get("/v1/jobs", headers=alice.headers).headers["ratelimit-remaining"] == "2"


def test_unknown_keys_are_401_and_never_counted(
    limited: tuple[TestClient, Clock], alice: Tenant_, redis_client: redis.Redis
):
    client, _ = limited
    for _ in range(5):
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer ssah_nope"}).status_code == 401
    assert redis_client.keys("ssah:ratelimit:*") == []
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200


def test_zero_turns_rate_limiting_off(make_app: Callable[..., FastAPI], alice: Tenant_, redis_client: redis.Redis):
    with TestClient(make_app(rate_limit_per_minute=0)) as client:
        responses = [client.get("/v1/jobs", headers=alice.headers) for _ in range(5)]
    assert {r.status_code for r in responses} == {200}
    assert "ratelimit-limit" not in responses[0].headers and redis_client.keys("ssah:ratelimit:*") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_redis_restart_fails_open_with_one_log_line_then_limits_again(
    make_app: Callable[..., FastAPI], alice: Tenant_, caplog: pytest.LogCaptureFixture
):
    port = _free_port()
    server = _start_redis(port)  # a private Redis, so stopping it disturbs nobody
    try:
        app = make_app(rate_limit_per_minute=2, rate_limit_url=f"redis://127.0.0.1:{port}/0")
        clock = Clock()
        app.state.rate_limiter.clock = clock
        with TestClient(app) as client:

            def get():
                return client.get("/v1/jobs", headers=alice.headers)

            assert [get().status_code for _ in range(3)] == [200, 200, 429]
            server.terminate()
            server.wait(10)
            with caplog.at_level(logging.WARNING, logger="service.ratelimit"):
                outage = [get() for _ in range(4)]  # polling goes on while Redis is down
            assert {r.status_code for r in outage} == {200}
            assert "ratelimit-limit" not in outage[0].headers
            warnings = [r.getMessage() for r in caplog.records if r.name == "service.ratelimit"]
            assert len(warnings) == 1 and "unreachable" in warnings[0]  # one line, not one per request

            server = _start_redis(port)
            clock.now += RETRY_SECONDS + WINDOW_SECONDS  # past the back-off, in a fresh window
            assert [get().status_code for _ in range(3)] == [200, 200, 429]
    finally:
        server.kill()
        server.wait(10)


def test_far_from_the_limit_counts_reach_redis_in_batches(broker_url: str, redis_client: redis.Redis):
    """Polls far below the limit cost no Redis round trip each, yet every one is counted."""
    limiter = RateLimiter(broker_url, per_minute=10_000)
    clock = Clock()
    limiter.clock = clock
    key_id = uuid.uuid4()
    round_trips = 0

    async def run() -> list[int]:
        nonlocal round_trips
        original = limiter._sync

        async def counting_sync(*args):
            nonlocal round_trips
            round_trips += 1
            return await original(*args)

        limiter._sync = counting_sync
        remaining = []
        for step in range(100):
            clock.now += 0.01  # 100 requests in one second
            remaining.append((await limiter.hit(key_id)).remaining)
            await asyncio.sleep(0)
        clock.now += 1
        await limiter._sync(limiter._counters[key_id], clock.now)  # flush what is still local
        return remaining

    remaining = asyncio.run(run())
    assert remaining == list(range(9_999, 9_899, -1))  # the local estimate is exact with one process
    assert round_trips <= 6  # one per SYNC_SECONDS (0.25 s) plus the flush, not one per request
    window = int(clock.now // 60)
    assert int(redis_client.get(f"ssah:ratelimit:{key_id}:{window}")) == 100

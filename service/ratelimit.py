"""Requests per API key per minute, counted in Redis (a fixed one-minute window).

Each process counts locally and adds its count to Redis in batches: at most one round trip per
key every ``SYNC_SECONDS``, and one per request only once a key is past ``EXACT_FROM`` of its
limit, where the answer must be exact. A round trip per request would halve what a 2-core
server can answer (bench/api_load.py) and open one Redis connection per request in flight.
With several API processes a key can overshoot by what the others counted in the last
``SYNC_SECONDS`` before they synced.

Fail-open: when Redis cannot be reached the request goes through and one line is logged (at most
every ``RETRY_SECONDS``), and Redis is not asked again for that long. Dashboards keep polling
through a broker restart; throttling resumes by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import typing
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import ProblemError
from service.redact import redact
from service.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
SYNC_SECONDS = 0.25  # a key's local count reaches Redis at least this often while it is used
EXACT_FROM = 0.8  # past this fraction of the limit, every request syncs, so 429s are exact
RETRY_SECONDS = 5.0  # after a Redis failure, requests pass unchecked this long before Redis is tried again
STATE_KEY = "rate_limit"  # where the decision waits in the request state for RateLimitHeaders


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int  # negative: over the limit
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": f"{self.limit};w={WINDOW_SECONDS}",
        }


@dataclass
class _Counter:
    """One key's requests in one window: the global count Redis last gave, plus what is not sent yet."""

    key: str
    window: int
    synced: int = 0
    sending: int = 0
    pending: int = 0
    synced_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def estimate(self) -> int:
        return self.synced + self.sending + self.pending


class RateLimited(ProblemError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class RateLimiter:
    """Counts each key's requests in the current minute; ``per_minute`` 0 or no Redis URL: off."""

    def __init__(self, url: str | None, per_minute: int, *, timeout: float = 0.5, clock=time.time):
        self.url = url if url and url.startswith(("redis://", "rediss://", "unix://")) else None
        self.per_minute = per_minute
        self.timeout = timeout
        self.clock = clock
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._skip_until = 0.0
        self._counters: dict[uuid.UUID, _Counter] = {}
        self._background: set[asyncio.Future[bool]] = set()  # strong references to syncs in flight

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            settings.rate_limit_url or settings.broker_url,
            settings.rate_limit_per_minute,
            timeout=min(settings.broker_timeout_seconds, 0.5),
        )

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0 and self.url is not None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            # Only called when enabled, i.e. with a url.
            self._client = aioredis.Redis.from_url(
                typing.cast(str, self.url), socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    def _bind_loop(self) -> None:
        # Asyncio clients and locks belong to one event loop; test clients and reloads may bring another.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._client, self._counters, self._loop = None, {}, loop

    async def hit(self, key_id: uuid.UUID) -> Decision | None:
        """Count one request of ``key_id``; None when not limited (off, or Redis unreachable)."""
        if not self.enabled:
            return None
        self._bind_loop()
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        counter = self._counter(key_id, window)
        counter.pending += 1
        if now < self._skip_until:
            return None
        if counter.estimate() >= EXACT_FROM * self.per_minute:
            if not await self._sync(counter, now):
                return None
        elif now - counter.synced_at >= SYNC_SECONDS and not counter.lock.locked():
            task = asyncio.ensure_future(self._sync(counter, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        return Decision(limit=self.per_minute, remaining=self.per_minute - counter.estimate(), reset=reset)

    def _counter(self, key_id: uuid.UUID, window: int) -> _Counter:
        counter = self._counters.get(key_id)
        if counter is None or counter.window != window:
            if len(self._counters) > 10_000:  # keys idle since an older window
                self._counters = {k: c for k, c in self._counters.items() if c.window == window}
            counter = self._counters[key_id] = _Counter(f"ssah:ratelimit:{key_id}:{window}", window)
        return counter

    async def _sync(self, counter: _Counter, now: float) -> bool:
        """Add the counter's pending requests to Redis and learn the global count; False if Redis failed."""
        async with counter.lock:
            sending, counter.pending = counter.pending, 0
            counter.sending = sending
            try:
                async with self._redis().pipeline(transaction=False) as pipe:
                    # The expiry outlives the window so a late INCRBY never makes an immortal key.
                    # (type: ignore: a pipeline's command returns the pipeline, redis types it as the reply.)
                    count, _ = await pipe.incrby(counter.key, sending).expire(counter.key, 2 * WINDOW_SECONDS).execute()  # type: ignore[attr-defined]
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                counter.pending += sending
                if now >= self._skip_until:  # one log line per outage, not one per request
                    log.warning(
                        "rate limiting skipped for %.0f s: Redis at %s unreachable (%s: %s)",
                        RETRY_SECONDS,
                        redact(self.url),
                        type(exc).__name__,
                        redact(exc),
                    )
                self._skip_until = now + RETRY_SECONDS
                return False
            finally:
                counter.sending = 0
            counter.synced, counter.synced_at = int(count), now
            return True

    async def check(self, state: object, key_id: uuid.UUID) -> None:
        """Count the request; 429 past the limit. Leaves the decision on ``state`` for the response headers."""
        decision = await self.hit(key_id)
        if decision is None:
            return
        if decision.remaining < 0:  # this request was one past the limit
            raise RateLimited(
                f"more than {self.per_minute} requests this minute with this API key (rate_limit_per_minute); "
                f"retry in {decision.reset} s",
                extra={"limit": "rate_limit_per_minute", "limit_value": self.per_minute},
                headers={"Retry-After": str(decision.reset), **decision.headers()},
            )
        setattr(state, STATE_KEY, decision)


class RateLimitHeaders:
    """ASGI middleware: adds the RateLimit-* headers of an allowed request to its response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = scope.get("state", {}).get(STATE_KEY)
                if decision is not None and message["status"] != 429:
                    headers = message.setdefault("headers", [])
                    headers.extend((k.lower().encode(), v.encode()) for k, v in decision.headers().items())
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""Requests per API key per minute, counted in Redis (a fixed one-minute window, one round trip).

Fail-open: when Redis cannot be reached the request goes through and one line is logged (at most
every ``RETRY_SECONDS``), and Redis is not asked again for that long. Dashboards keep polling
through a broker restart; throttling resumes by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ProblemError
from service.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
RETRY_SECONDS = 5.0  # after a Redis failure, requests pass unchecked this long before Redis is tried again
STATE_KEY = "rate_limit"  # where the decision waits in the request state for RateLimitHeaders


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int  # negative: over the limit
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(max(0, self.remaining)),
                "RateLimit-Reset": str(self.reset), "RateLimit-Policy": f"{self.limit};w={WINDOW_SECONDS}"}


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

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(settings.rate_limit_url or settings.broker_url, settings.rate_limit_per_minute,
                   timeout=min(settings.broker_timeout_seconds, 0.5))

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0 and self.url is not None

    def _redis(self) -> aioredis.Redis:
        # An asyncio client belongs to one event loop; test clients and reloads may bring another.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                   socket_connect_timeout=self.timeout)
            self._loop = loop
        return self._client

    async def hit(self, key_id: uuid.UUID) -> Decision | None:
        """Count one request of ``key_id``; None when not limited (off, or Redis unreachable)."""
        if not self.enabled:
            return None
        now = self.clock()
        if now < self._skip_until:
            return None
        window = int(now // WINDOW_SECONDS)
        key = f"ssah:ratelimit:{key_id}:{window}"
        try:
            async with self._redis().pipeline(transaction=False) as pipe:
                # One round trip; the expiry outlives the window so a late INCR never makes an immortal key.
                count, _ = await pipe.incr(key).expire(key, 2 * WINDOW_SECONDS).execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._skip_until = now + RETRY_SECONDS
            log.warning("rate limiting skipped for %.0f s: Redis at %s unreachable (%s: %s)", RETRY_SECONDS,
                        self.url, type(exc).__name__, exc)
            return None
        reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        return Decision(limit=self.per_minute, remaining=self.per_minute - int(count), reset=reset)

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

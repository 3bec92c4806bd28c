"""Prometheus metrics and the request-id/timing middleware (plain ASGI: cheap on the hot GET path)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.models import Job, JobStatus

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ssah_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ssah_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self._jobs: _JobsCollector | None = None

    def watch_jobs(self, factory: Callable[[], sessionmaker[Session]], *, cache_seconds: float = 15.0) -> None:
        """Expose ``ssah_jobs`` (queued and running jobs by kind and status), counted at most every ``cache_seconds``."""
        self._jobs = _JobsCollector(factory, cache_seconds)
        self.registry.register(self._jobs)

    def render(self) -> bytes:
        """The Prometheus text of this app, plus the process's default registry (an embedded worker's metrics).

        With ``PROMETHEUS_MULTIPROC_DIR`` set, counters and histograms are those of every process
        writing there (uvicorn workers, Celery processes), added up; the directory must be emptied
        before the processes start (docs/deployment.md), or a restart's counters add to the old ones.
        """
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            if self._jobs is not None:
                registry.register(self._jobs)  # counted from the database, not from a process's files
            return generate_latest(registry)
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class _JobsCollector:
    """Active jobs only, all tenants summed, no tenant label: what an operator needs, nothing a tenant could mine.

    The count reads queued and running rows through the status index, so its cost follows the
    work in flight (bounded by the per-tenant job limit), not the table's history; and it runs at
    most once per ``cache_seconds`` however often /metrics (which needs no key) is scraped.
    """

    def __init__(self, factory: Callable[[], sessionmaker[Session]], cache_seconds: float, clock=time.monotonic):
        self.factory, self.cache_seconds, self.clock = factory, cache_seconds, clock
        self._counted: list[tuple[str, str, int]] = []
        self._counted_at = float("-inf")
        self._lock = threading.Lock()

    def _counts(self) -> list[tuple[str, str, int]]:
        with self._lock:
            if self.clock() - self._counted_at >= self.cache_seconds:
                self._counted_at = self.clock()  # also after a failure: an outage must not cost a query per scrape
                with self.factory()() as session:
                    rows = session.execute(
                        sa.select(Job.kind, Job.status, sa.func.count())
                        .where(Job.status.in_(ACTIVE))
                        .group_by(Job.kind, Job.status)
                    )
                    self._counted = [(kind, status, count) for kind, status, count in rows]
            return self._counted

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "ssah_jobs", "Jobs queued or running, by kind and status (all tenants together).", labels=["kind", "status"]
        )
        try:
            for kind, status, count in self._counts():
                gauge.add_metric([kind, status], count)
        except sa.exc.SQLAlchemyError:
            pass  # /readyz reports the database; a scrape must not fail because of it
        yield gauge

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class RequestMiddleware:
    """Gives every request an id of the server's own (``X-Request-ID``) and records its count and latency.

    A client's ``X-Request-ID`` is kept apart (``client_request_id``, printable, at most 100
    characters): ids in logs and the audit log must be ones the client cannot choose.
    """

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["client_request_id"] = request_id, _header(scope, b"x-request-id")
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            with logs.context(request_id=request_id):  # every line logged for this request carries it
                await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            # Templates, not raw paths: label cardinality stays bounded whatever ids are polled.
            template = getattr(route, "path", None) or "unmatched"
            if scope["path"].startswith("/v1/") and template.startswith("/") and not template.startswith("/v1/"):
                template = "/v1" + template  # newer FastAPI reports the included router's own path
            metrics = self.metrics()
            metrics.requests.labels(scope["method"], template, str(status)).inc()
            metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text = value.decode("latin-1")[:100]
            return text if text.isprintable() else None
    return None

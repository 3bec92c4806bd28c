"""The app factory. Importing this module builds the app but opens no connection."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from service import logs, openapi, redact
from service.api import ops
from service.api.v1 import router as v1_router
from service.auth import KeyCache
from service.body_guard import BodyGuard, BodyTooLarge, on_body_too_large
from service.dashboard import router as dashboard_router
from service.db import get_sessionmaker
from service.errors import install_error_handlers
from service.metrics import Metrics, RequestMiddleware
from service.queue import make_celery
from service.ratelimit import RateLimiter, RateLimitHeaders
from service.settings import Settings, get_settings

VERSION = "0.1.0"

DESCRIPTION = """\
Audit LLMs at the level of single neurons and attention heads (Superficial Safety Alignment
Hypothesis): find safety-critical units, score ablations, fine-tune without losing safety.

Every `/v1` route needs `Authorization: Bearer <key>` (or `X-API-Key`). Long work answers
`202 Accepted` with a job and a `Location` to poll; errors are RFC 9457 `application/problem+json`.
"""

TAGS = [
    {"name": "models", "description": "Register model sources."},
    {"name": "datasets", "description": "Upload datasets (JSONL, CSV, JSON, text)."},
    {"name": "audits", "description": "Find the safety-critical units of a model."},
    {"name": "unit maps", "description": "Results of succeeded audits."},
    {"name": "evaluations", "description": "Safety and utility scores, with optional ablation."},
    {"name": "finetunes", "description": "Fine-tune while keeping safety units intact."},
    {"name": "comparisons", "description": "Role transfer between two audits."},
    {"name": "probes", "description": "The reasoning-direction probe and the refusal direction."},
    {"name": "jobs", "description": "All jobs, whatever their kind."},
    {"name": "retention", "description": "How long finished jobs are kept."},
    {"name": "audit log", "description": "Who registered, uploaded, submitted, cancelled or deleted what, and when."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # No more threads than pooled connections: a burst of requests then waits for a pooled
    # connection instead of opening (and closing) overflow connections, which costs milliseconds.
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.settings.db_pool_size
    # The app's own objects (routes, schemas, SQLAlchemy metadata: ~10^5) live as long as the
    # process; frozen, a full collection no longer walks them and stops stalling polls ~100 ms.
    gc.freeze()
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    logs.configure(settings.log_format, settings.log_level)
    redact.install()  # no log line of this process carries a URL's password
    app = FastAPI(
        title="SSAH Audit",
        version=VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=_lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    openapi.install(app)
    app.state.settings = settings
    app.state.sessionmaker = get_sessionmaker(settings.database_url)
    app.state.celery = make_celery(settings)
    app.state.key_cache = KeyCache(settings.api_key_cache_seconds)
    app.state.key_lookups = {}  # key hash -> the lookup in flight (see deps._authenticate)
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    app.state.metrics = Metrics()
    app.state.metrics.watch_jobs(lambda: app.state.sessionmaker, cache_seconds=settings.metrics_cache_seconds)
    install_error_handlers(app)
    app.add_exception_handler(BodyTooLarge, on_body_too_large)
    app.add_middleware(BodyGuard)  # innermost of ours: the request id exists when it refuses
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(RequestMiddleware, metrics=lambda: app.state.metrics)
    app.include_router(ops.router)
    app.include_router(v1_router)
    app.include_router(dashboard_router)
    return app


app = create_app()

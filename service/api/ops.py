"""Operations endpoints, outside ``/v1``: liveness, readiness, metrics."""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service.errors import ServiceUnavailable, Unauthorized
from service.queue import ping
from service.schemas.common import problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def get_health() -> dict[str, str]:
    """Say the process is alive (touches nothing else)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))
def get_readiness(request: Request) -> dict[str, object]:
    """Check the database (SELECT 1) and the broker; 503 naming whatever is down."""
    down: dict[str, str] = {}
    try:
        with request.app.state.sessionmaker() as session:
            session.execute(sa.text("SELECT 1"))
    except Exception as exc:
        down["database"] = type(exc).__name__
    try:
        ping(request.app.state.celery)
    except Exception as exc:
        down["broker"] = type(exc).__name__
    if down:
        raise ServiceUnavailable(f"not ready: {', '.join(down)} unreachable", extra={"down": down})
    return {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **problem_responses(401),
    },
)
async def get_metrics(request: Request) -> Response:
    """Expose Prometheus metrics: requests by route and status, latency, queued and running jobs."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this deployment's /metrics needs 'Authorization: Bearer <metrics token>'")
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

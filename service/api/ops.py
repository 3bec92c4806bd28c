"""Operations endpoints, outside ``/v1``: liveness, readiness, metrics."""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
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
    """Check the database (SELECT 1) and the broker; 503 only when the database is down.

    A broker outage alone keeps the API ready: jobs are committed and wait in the outbox until the
    reconciler sends them, so the body says ``degraded`` and why instead of taking the API out of rotation.
    """
    checks: dict[str, str] = {"database": "ok", "broker": "ok"}
    try:
        with request.app.state.sessionmaker() as session:
            session.execute(sa.text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable(
            "not ready: database unreachable", extra={"down": {"database": type(exc).__name__}}
        ) from None
    try:
        ping(request.app.state.celery)
    except Exception as exc:
        checks["broker"] = f"down: {type(exc).__name__}"
        return {
            "status": "degraded",
            "checks": checks,
            "detail": "the broker is unreachable: new jobs are accepted (202, enqueued_at null) and kept in the "
            "outbox; the workers' reconciler sends them once it is back",
        }
    return {"status": "ready", "checks": checks}


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
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""Every error rendered once as RFC 9457 problem+json; the error classes live in ``service/problems.py``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.problems import (  # noqa: F401  (re-exported: routes import the errors from here)
    BadRequest,
    Conflict,
    ContentTooLarge,
    IdempotencyConflict,
    JobNotReady,
    NotFound,
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)
from service.redact import redact

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# The database cannot be reached (restarting, failing over, connections exhausted): the same request
# succeeds once it is back, so callers get 503 + Retry-After, not a 500 that reads like a bug.
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
DATABASE_RETRY_AFTER_SECONDS = 2  # a PostgreSQL restart takes seconds; pollers should not wait minutes


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    slug: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an ``application/problem+json`` response for ``request``."""
    body: dict[str, Any] = {
        "type": f"urn:ssah:problem:{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        slug=exc.slug,
        extra=exc.extra,
        headers=exc.headers,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _loc(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return problem_response(
        request,
        status=422,
        title="Unprocessable Content",
        detail=detail,
        slug="validation",
        extra={"errors": errors},
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, RecursionError):  # FastAPI's body parser hit "[[[[...": the body is the problem
        return problem_response(
            request,
            status=422,
            title="Unprocessable Content",
            slug="validation",
            detail="body: JSON nested too deeply to parse",
            extra={"errors": [{"loc": "body", "msg": "JSON nested too deeply to parse", "type": "json_too_deep"}]},
        )
    title = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        request, status=exc.status_code, title=title, detail=detail, headers=dict(exc.headers or {})
    )


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    # One line, no traceback: an outage makes every request fail the same way.
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        redact((str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0]),
    )
    return problem_response(
        request,
        status=503,
        title="Service Unavailable",
        slug="database-unavailable",
        detail="The database is unavailable; retry shortly (a POST with the same Idempotency-Key).",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        getattr(request.state, "request_id", "-"),
    )
    return problem_response(
        request,
        status=500,
        title="Internal Server Error",
        slug="internal",
        detail="An unexpected error occurred; quote the request_id when reporting it.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can raise as problem+json."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for database_down in DATABASE_DOWN:
        app.add_exception_handler(database_down, _on_database_down)
    app.add_exception_handler(Exception, _on_unexpected)

"""Authenticate before a request body is read, and never read more of it than its route allows.

FastAPI reads (and parses, or spools to disk) the whole body before any dependency runs, so the
key check of ``deps._principal`` alone would let anyone make the API hold a 150 MB JSON document
or write a 300 MB upload to disk before answering 401. This ASGI middleware runs first for every
``/v1`` request that may carry a body: it checks the key from the headers (401 without touching
the body), refuses a declared ``Content-Length`` over the route's limit (413), and counts the
bytes as they stream in, stopping at the limit (413) when no length or a false one was declared.
"""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import extract_key
from service.errors import DATABASE_DOWN, ContentTooLarge, ProblemError, ServiceUnavailable, problem_response
from service.settings import Settings

log = logging.getLogger(__name__)

BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small form fields around the file
PRINCIPAL = "principal"  # where the checked principal waits in the request state for deps._principal


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """(bytes, the setting that sets them) a request to ``method path`` may send."""
    if method == "POST" and path.rstrip("/") == "/v1/datasets":
        return settings.max_upload_bytes + MULTIPART_OVERHEAD, "max_upload_bytes"
    return settings.max_json_body_bytes, "max_json_body_bytes"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passes its limit; an HTTPException so that
    FastAPI's body reader lets it through (it turns anything else into a 400)."""

    def __init__(self, problem: ContentTooLarge):
        super().__init__(413, problem.detail)
        self.problem = problem


def too_large(limit: int, setting: str, what: str) -> ContentTooLarge:
    return ContentTooLarge(
        f"the request body {what} the limit of {limit} bytes for this route ({setting})",
        extra={"limit": setting, "limit_value": limit, "limit_bytes": limit},
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODILESS or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        from service.api.deps import authenticate_request  # the router imports this module's app indirectly

        request = Request(scope)  # no receive: nothing here can read the body
        limit, setting = body_limit(request.app.state.settings, scope["method"], scope["path"])
        try:
            key = extract_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
            principal = await authenticate_request(request, key)
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise too_large(limit, setting, f"declares {declared} bytes (Content-Length), over")
        except ProblemError as exc:
            await _problem(request, exc)(scope, receive, send)
            return
        except DATABASE_DOWN as exc:
            log.warning(
                "database unavailable while authenticating %s %s: %s",
                scope["method"],
                scope["path"],
                type(exc).__name__,
            )
            unavailable = ServiceUnavailable(
                "The database is unavailable; retry shortly.", headers={"Retry-After": "2"}
            )
            unavailable.slug = "database-unavailable"
            await _problem(request, unavailable)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large(limit, setting, "exceeds"))
            return message

        await self.app(scope, counted, send)


def _problem(request: Request, exc: ProblemError):
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        slug=exc.slug,
        extra=exc.extra,
        headers=exc.headers,
    )


async def on_body_too_large(request: Request, exc: Exception):
    """The exception handler that renders ``BodyTooLarge`` as the route's 413 problem."""
    assert isinstance(exc, BodyTooLarge)
    return _problem(request, exc.problem)

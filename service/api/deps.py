"""Dependencies shared by the routers: session, caller, pagination, idempotency, job responses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service import logs, queries
from service.auth import KeyCache, Principal, authenticate, extract_key, hash_key
from service.body_guard import PRINCIPAL
from service.db import reading, session_scope
from service.errors import Conflict, IdempotencyConflict, NotFound
from service.models import IdempotencyKey, Job
from service.schemas.jobs import JobRead


def _session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.sessionmaker)


# scope="function": commit (and enqueue) before the response leaves, so a 202 means committed.
SessionDep = Annotated[Session, Depends(_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The key alone, as an alternative.")


def _lookup_key(factory: sessionmaker[Session], key: str, cache: KeyCache) -> Principal:
    with factory() as session:
        return authenticate(session, key, cache=cache)


async def _authenticate(request: Request, key: str) -> Principal:
    cache: KeyCache = request.app.state.key_cache
    # Async on purpose: a cached key costs no thread hop and no database round trip.
    key_hash = hash_key(key)
    if (principal := cache.get(key_hash)) is not None:
        return principal
    # Single flight: when a popular key's entry expires, its 200 pollers share one lookup
    # instead of queueing 200 database round trips behind each other.
    lookups: dict[str, asyncio.Future[Principal]] = request.app.state.key_lookups
    if (pending := lookups.get(key_hash)) is None:
        pending = asyncio.ensure_future(run_in_threadpool(_lookup_key, request.app.state.sessionmaker, key, cache))
        lookups[key_hash] = pending
        pending.add_done_callback(lambda _: lookups.pop(key_hash, None))
    return await asyncio.shield(pending)


async def authenticate_request(request: Request, key: str) -> Principal:
    """The principal owning ``key``; 401 if unknown or revoked (also used by ``body_guard`` before the body)."""
    return await _authenticate(request, key)


async def _principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    principal = getattr(request.state, PRINCIPAL, None)  # checked already by body_guard, before the body
    if principal is None:
        authorization = request.headers.get("authorization")
        key = extract_key(authorization, api_key) if bearer is None else bearer.credentials
        principal = await _authenticate(request, key)
    logs.bind(tenant_id=principal.tenant_id)  # until the request middleware's context ends
    # Per key, after authentication: unknown keys never reach Redis; one round trip, fail-open.
    await request.app.state.rate_limiter.check(request.state, principal.key_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


class PageParams(BaseModel):
    limit: int
    offset: int


def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip.")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(_page_params)]


def make_page(request: Request, items: Sequence[Any], total: int, page: PageParams) -> dict[str, Any]:
    """Build a page body whose ``next`` link keeps the request's filters."""
    following = page.offset + page.limit
    next_url = str(request.url.include_query_params(offset=following)) if following < total else None
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset, "next": next_url}


def etag_of(job: Job | sa.Row[Any]) -> str:
    """A weak ETag that changes whenever the job row does."""
    return f'W/"{job.id}-{job.version}"'


def job_response(request: Request, job: Job | sa.Row[Any]) -> Response:
    """200 with the job and its ETag, or 304 when ``If-None-Match`` already names that ETag."""
    etag = etag_of(job)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and (if_none_match.strip() == "*" or etag in {t.strip() for t in if_none_match.split(",")}):
        return Response(status_code=304, headers={"ETag": etag})
    body = JobRead.model_validate(job).model_dump_json()
    return Response(body, media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-cache"})


class Idempotency:
    """Replays the first answer to a POST with the same ``Idempotency-Key``; refuses a changed body."""

    def __init__(self, request: Request, session: Session, principal: Principal, key: str | None):
        self.request, self.session, self.principal, self.key = request, session, principal, key
        self.request_hash = ""

    def replay(self, payload: Any) -> JSONResponse | None:
        """Return the stored answer for this key, None if the key is new; 422 if the body changed."""
        if self.key is None:
            return None
        canonical = json.dumps(
            [self.request.method, self.request.url.path, jsonable_encoder(payload)],
            sort_keys=True,
            separators=(",", ":"),
        )
        self.request_hash = hashlib.sha256(canonical.encode()).hexdigest()
        stored = queries.get_idempotency_key(self.session, tenant_id=self.principal.tenant_id, key=self.key)
        if stored is None:
            return None
        if stored.request_hash != self.request_hash:
            raise IdempotencyConflict(
                f"Idempotency-Key {self.key!r} was first used with a different request; use a new key",
                extra={
                    "errors": [
                        {
                            "loc": "header.Idempotency-Key",
                            "msg": "reused with a different request",
                            "type": "idempotency_conflict",
                        }
                    ]
                },
            )
        headers = {"Idempotent-Replayed": "true"}
        if stored.location:
            headers["Location"] = stored.location
        return JSONResponse(stored.response_body, status_code=stored.response_status, headers=headers)

    def respond(self, status: int, body: BaseModel, *, location: str | None = None) -> JSONResponse:
        """Answer ``status`` with ``body``, remembering it under the key when one was sent."""
        content = body.model_dump(mode="json")
        if self.key is not None:
            self.session.add(
                IdempotencyKey(
                    tenant_id=self.principal.tenant_id,
                    key=self.key,
                    request_hash=self.request_hash,
                    response_status=status,
                    response_body=content,
                    location=location,
                )
            )
            try:
                self.session.flush()
            except IntegrityError as exc:  # a concurrent request with the same key won the race
                raise Conflict(f"a request with Idempotency-Key {self.key!r} is in progress; retry") from exc
        return JSONResponse(content, status_code=status, headers={"Location": location} if location else None)


def _idempotency(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Retry-safe POST: the same key replays the first answer.",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(request, session, principal, idempotency_key)


IdempotencyDep = Annotated[Idempotency, Depends(_idempotency)]


def accepted_job(idem: Idempotency, job: Job, *, collection: str) -> JSONResponse:
    """202 with the job resource and a ``Location`` header pointing at it."""
    return idem.respond(202, JobRead.model_validate(job), location=f"/v1/{collection}/{job.id}")


def _read_job(factory: sessionmaker[Session], principal: Principal, job_id: uuid.UUID, kind: str | None) -> sa.Row[Any]:
    with reading(factory) as reader:  # JobRead and the ETag read the row by attribute
        row = queries.get_job_row(reader, tenant_id=principal.tenant_id, job_id=job_id, kind=kind)
    if row is None:
        raise NotFound(f"no {kind or 'job'} {job_id}")
    return row


async def poll_job(request: Request, principal: Principal, job_id: uuid.UUID, *, kind: str | None) -> Response:
    """The polling hot path: one thread hop, one indexed query, 304 when the ETag still matches."""
    job = await run_in_threadpool(_read_job, request.app.state.sessionmaker, principal, job_id, kind)
    return job_response(request, job)

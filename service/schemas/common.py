"""Schemas shared by every resource: pages and problems."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total count and the link to the next page."""

    items: list[T]
    total: int = Field(description="How many items match the filters, across all pages.")
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, or null on the last page.")


class FieldError(BaseModel):
    loc: str = Field(description="Dotted path of the offending field, e.g. 'body.cuts.scu'.")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


PROBLEM_DESCRIPTIONS = {
    400: "Bad Request: the request could not be read.",
    401: "Unauthorized: no key, or an unknown or revoked one.",
    404: "Not Found: no such resource for this tenant (another tenant's ids answer the same).",
    409: "Conflict: the resource's state forbids it (a job not succeeded or already finished, a name taken, "
    "a request with the same Idempotency-Key in progress).",
    413: "Content Too Large: past a body, upload or row limit; `limit` names the setting.",
    422: "Unprocessable Content: the request is invalid; `errors` lists the fields.",
    429: "Too Many Requests: the key's rate limit or the tenant's concurrent jobs; retry after `Retry-After`.",
    503: "Service Unavailable: the database is unreachable; retry after `Retry-After`.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers for ``statuses``.

    ``service.openapi`` files the ``Problem`` schema under ``application/problem+json`` only."""
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": PROBLEM_DESCRIPTIONS.get(status, "A problem."),
            **({"headers": RETRY_AFTER} if status in (429, 503) else {}),
        }
        for status in statuses
    }


def binary_response(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """The ``200`` entry of a file download, typed as binary so client generators keep the route."""
    return {
        200: {
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
            "description": description,
        }
    }


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the If-None-Match ETag is still current."}
}

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


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers for ``statuses``."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}, "description": "A problem."}
        for status in statuses
    }


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the If-None-Match ETag is still current."}
}

"""What the API answers, as typed records: jobs, models, datasets and pages of them.

Each record keeps the whole resource in ``raw``: fields a newer server adds (labels, gates,
callbacks) are there before this client names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
T = TypeVar("T")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time as the API writes it (``Z`` accepted on every Python)."""
    if value is None:
        return None
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


@dataclass(frozen=True)
class Job:
    """A job of any kind and where it stands: ``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``."""

    id: str
    kind: str
    status: str
    progress: float
    progress_message: str | None
    params: dict[str, Any]
    error: str | None
    model_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    version: int
    raw: dict[str, Any] = field(repr=False)
    etag: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any], *, etag: str | None = None) -> Job:
        return cls(
            id=str(body["id"]),
            kind=body["kind"],
            status=body["status"],
            progress=float(body.get("progress", 0.0)),
            progress_message=body.get("progress_message"),
            params=dict(body.get("params") or {}),
            error=body.get("error"),
            model_id=body.get("model_id"),
            created_at=parse_time(body.get("created_at")),
            updated_at=parse_time(body.get("updated_at")),
            started_at=parse_time(body.get("started_at")),
            finished_at=parse_time(body.get("finished_at")),
            attempts=int(body.get("attempts", 0)),
            cancel_requested=bool(body.get("cancel_requested", False)),
            version=int(body.get("version", 0)),
            raw=body,
            etag=etag,
        )

    @property
    def terminal(self) -> bool:
        """Whether the job has finished (succeeded, failed or cancelled): it changes no more."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def gate(self) -> dict[str, Any] | None:
        """The job's gate (``{"passed", "checks", ...}``) when it carries one."""
        gate = self.raw.get("gate")
        return gate if isinstance(gate, dict) else None

    @property
    def gate_passed(self) -> bool:
        """False only when a gate was evaluated and failed: no gate, or one not evaluated yet, passes."""
        gate = self.gate
        return gate is None or gate.get("passed") is not False


@dataclass(frozen=True)
class Model:
    """A registered model source."""

    id: str
    name: str
    source: str
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Model:
        return cls(
            id=str(body["id"]),
            name=body["name"],
            source=body["source"],
            created_at=parse_time(body.get("created_at")),
            raw=body,
        )

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.raw.get("labels") or {})


@dataclass(frozen=True)
class Dataset:
    """An uploaded dataset: its row count, size and content hash."""

    id: str
    name: str
    format: str
    rows: int
    size_bytes: int
    sha256: str
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Dataset:
        return cls(
            id=str(body["id"]),
            name=body["name"],
            format=body["format"],
            rows=int(body["rows"]),
            size_bytes=int(body["size_bytes"]),
            sha256=body["sha256"],
            created_at=parse_time(body.get("created_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: ``items``, the ``total`` across pages, and the link to the ``next`` one (or None)."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any], item: Callable[[dict[str, Any]], T]) -> Page[T]:
        return cls(
            items=[item(entry) for entry in body["items"]],
            total=int(body["total"]),
            limit=int(body["limit"]),
            offset=int(body["offset"]),
            next=body.get("next"),
        )

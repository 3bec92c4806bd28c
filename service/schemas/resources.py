"""Schemas of registered models and uploaded datasets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .integrations import Labels

DatasetFormat = Literal["jsonl", "csv", "json", "txt"]


class ModelCreate(BaseModel):
    """Register a model source: a hub id, a local path, a GGUF file or ``builtin:smollm2``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    source: str = Field(min_length=1, max_length=1000, pattern=r"^\S+$", examples=["builtin:smollm2"])
    labels: Labels = Field(default_factory=dict)


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    source: str
    labels: dict[str, str]
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    format: DatasetFormat
    rows: int
    size_bytes: int
    sha256: str
    created_at: datetime

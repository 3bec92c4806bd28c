"""Schemas of job results: unit maps, scores, fine-tune results and comparisons."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ClassSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    units: int
    unit_fraction: float
    param_fraction: float


class UnitMapRead(BaseModel):
    """The summary of an audit's unit map, as the engine wrote it."""

    job_id: uuid.UUID
    classes: dict[str, ClassSummary] = Field(description="Keyed by SCU, UCU, CU, RU.")
    layer_count: int
    config: dict[str, Any]
    model: Any
    data: Any
    artifact_available: bool
    created_at: datetime


class LayerRead(BaseModel):
    """Per-layer unit counts of each class."""

    model_config = ConfigDict(extra="allow")

    index: int


class ScoreRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID
    protocol_hash: str
    metrics: dict[str, Any]
    records_uri: str | None
    created_at: datetime


class FinetuneResultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    loss_curve: dict[str, Any]
    output_model_uri: str | None
    created_at: datetime


class ComparisonRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    crosstab: dict[str, Any] = Field(description="Counts of units moving from each class to each class.")
    created_at: datetime

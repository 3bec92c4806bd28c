"""Schemas of job results: unit maps, scores, fine-tune results and comparisons."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    records_uri: str | None = Field(
        description="The records API of this evaluation (paginated, filterable): an API URL (never a server path)."
    )
    created_at: datetime

    @model_validator(mode="after")
    def _api_url(self) -> ScoreRead:
        # The row holds the artifact key (tenant id and all); callers get the route that serves it.
        if self.records_uri is not None:
            self.records_uri = f"/v1/evaluations/{self.job_id}/records"
        return self


class FinetuneResultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    loss_curve: dict[str, Any]
    output_model_uri: str | None = Field(description="Where to download the trained model: an API URL (a tar).")
    output_model_source: str | None = Field(
        None,
        description="The model source that registers the trained model (POST /v1/models), e.g. `finetune:<job id>`.",
    )
    created_at: datetime

    @model_validator(mode="after")
    def _api_url(self) -> FinetuneResultRead:
        # The row holds where the worker wrote the model (an absolute server path): never shown.
        if self.output_model_uri is not None:
            self.output_model_uri = f"/v1/finetunes/{self.job_id}/model"
            self.output_model_source = f"finetune:{self.job_id}"
        return self


class ProbeResultRead(BaseModel):
    """What a probe measured: distances per k and layer, the refusal direction, unit writes along it."""

    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    summary: dict[str, Any] = Field(description="distances (refusal, compliance, gap per k), direction, unit_writes.")
    created_at: datetime


class ComparisonRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    crosstab: dict[str, Any] = Field(description="Counts of units moving from each class to each class.")
    created_at: datetime


class EvaluationRecordRead(BaseModel):
    """One prompt x condition (x suffix) of an evaluation, as the engine wrote it in evaluation.json."""

    model_config = ConfigDict(extra="allow")

    set: Literal["harmful", "harmless"]
    index: int = Field(description="The prompt's position in its set.")
    condition: str = Field(description="system, no_system or suffix.")
    suffix_index: int | None = Field(None, description="Which suffix of the suffix file (the suffix condition only).")
    id: str | int | None = Field(None, description="The benchmark's id of the prompt (e.g. a HarmBench BehaviorID).")
    category: str | int | None = None
    prompt: str
    rendered_prompt: str = Field(description="The exact text sent to the model.")
    response: str | None
    verdicts: dict[str, str] | None = Field(
        None, description="success, short or refusal under each refusal list of the protocol (the first: headline)."
    )
    opens_with_refusal: bool | None = None
    margin: float | None = Field(None, description="Refusal margin: > 0 predicts a refusal.")
    judge: dict[str, Any] | None = Field(None, description="The judge's verdict (unsafe, label, score), if any.")

"""Schemas of a unit map's figure arrays (``ssah_engine.unitmap_arrays`` computes them)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

CLASS_KEYS = "Keyed by SCU, UCU, CU, RU."


class CutLines(BaseModel):
    """Where each cut fell, in z units, read back from the labels; None where the class is empty."""

    scu: float | None = Field(description="SCU: z_S - z_U >= scu.")
    ucu: float | None = Field(description="UCU: z_S - z_U <= ucu.")
    ru: float | None = Field(description="RU: z_S + z_U <= ru among the rest (z_U <= ru for a utility-only map).")


class Density(BaseModel):
    """Neurons binned on (z_S, z_U) per class: ``bins`` x ``bins`` cells, both axes asinh-spaced over ``range``."""

    bins: int
    range: list[float] = Field(description="[low, high] in z units, shared by both axes.")
    scale: str = Field(description="asinh: cell i spans asinh(low) + i * width to + (i + 1) * width.")
    counts: dict[str, list[int]] = Field(description=f"Flat [i_zS, i_zU, units, ...] per occupied cell. {CLASS_KEYS}")
    missing: dict[str, int] = Field(description=f"Neurons with a non-finite score, not binned. {CLASS_KEYS}")


class HeadArrays(BaseModel):
    """Every attention head, layer-major (head h of layer l at l * heads_per_layer + h)."""

    labels: list[int] = Field(description="Index into classes.")
    z_safety: list[float | None] | None = Field(description="None for a utility-only map.")
    z_utility: list[float | None]


class UnitMapArraysRead(BaseModel):
    """A unit map in the compact form its figures are drawn from: binned neurons, every head, per-layer counts."""

    job_id: uuid.UUID
    format: int
    classes: list[str]
    layers: int
    heads_per_layer: int
    neurons_per_layer: int
    cut_fractions: dict[str, float] = Field(description="The parameter fractions the audit was run with.")
    cuts: CutLines
    layer_counts: dict[str, dict[str, list[int]]] = Field(
        description=f"heads and neurons: per class, the count in each layer. {CLASS_KEYS}"
    )
    heads: HeadArrays
    density: Density | None = Field(description="None for a utility-only map (no z_S).")


class LayerNeuronsRead(BaseModel):
    """One layer's neurons with their labels and z-scores (index order)."""

    job_id: uuid.UUID
    layer: int
    classes: list[str]
    labels: list[int]
    z_safety: list[float | None] | None
    z_utility: list[float | None]

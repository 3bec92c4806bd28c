"""Per-tensor training masks at unit granularity, built from a set of frozen units.

A frozen head owns its q rows and o columns; its KV group's k/v rows freeze only when every
query head of the group is frozen (the method page). A frozen neuron owns its gate and up rows
and its down column; fused Phi-3 projections are handled through the layout's row offsets.
Every tensor ends up in one of three states: trainable, frozen whole (requires_grad=False), or
partly frozen along one dimension (rows or columns, kept as an index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..architectures import ModelLayout, describe
from ..units import UnitSpace

MASKS_FILE = "masks.safetensors"


@dataclass(frozen=True)
class SliceMask:
    """The frozen part of a tensor: positions ``index`` along ``dim`` (0: rows, 1: columns)."""

    dim: int
    index: torch.Tensor  # int64, sorted, unique


@dataclass
class ParamMasks:
    """Which elements of which parameter train; parameters named as in ``model.named_parameters()``."""

    frozen_units: torch.Tensor  # bool [units], flat unit order, whole-layer freezes included
    frozen_kv_groups: torch.Tensor  # bool [layers, kv heads]
    whole: set[str] = field(default_factory=set)  # no trainable element
    slices: dict[str, SliceMask] = field(default_factory=dict)  # partly frozen

    def trainable(self, name: str, shape: torch.Size) -> torch.Tensor:
        """Dense bool mask of the trainable elements of parameter ``name``."""
        if name in self.whole:
            return torch.zeros(shape, dtype=torch.bool)
        mask = torch.ones(shape, dtype=torch.bool)
        if name in self.slices:
            part = self.slices[name]
            mask.index_fill_(part.dim, part.index, False)
        return mask

    def apply(self, model: nn.Module) -> None:
        """requires_grad=False on tensors with no trainable element (no gradient, no optimizer state)."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in self.whole)

    def summary(self, model: nn.Module, space: UnitSpace) -> dict:
        total = trainable = 0
        for name, parameter in model.named_parameters():
            total += parameter.numel()
            if name in self.whole:
                continue
            frozen = 0
            if name in self.slices:
                part = self.slices[name]
                frozen = part.index.numel() * parameter.numel() // parameter.shape[part.dim]
            trainable += parameter.numel() - frozen
        weights = space.param_weights()
        return {
            "parameters": total,
            "trainable_parameters": trainable,
            "trainable_fraction": trainable / max(total, 1),
            "frozen_units": int(self.frozen_units.sum()),
            "frozen_unit_fraction": float(self.frozen_units.double().mean()),
            "frozen_unit_param_fraction": float(weights[self.frozen_units].sum() / weights.sum()),
            "frozen_kv_groups": int(self.frozen_kv_groups.sum()),
            "frozen_tensors": len(self.whole),
            "partly_frozen_tensors": len(self.slices),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = {"frozen_units": self.frozen_units, "frozen_kv_groups": self.frozen_kv_groups}
        for name, part in self.slices.items():
            tensors[f"{'rows' if part.dim == 0 else 'columns'}/{name}"] = part.index.contiguous()
        metadata = {"format_version": "1", "whole": json.dumps(sorted(self.whole))}
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ParamMasks":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(str(path))
        slices = {}
        for key, index in tensors.items():
            kind, _, name = key.partition("/")
            if kind in ("rows", "columns"):
                slices[name] = SliceMask(0 if kind == "rows" else 1, index)
        return cls(tensors["frozen_units"], tensors["frozen_kv_groups"], set(json.loads(metadata["whole"])), slices)


def _unit_rows(frozen: torch.Tensor, width: int, offset: int = 0) -> torch.Tensor:
    """Row (or column) indices of the frozen units of one layer, each unit ``width`` wide."""
    units = torch.nonzero(frozen).squeeze(1)
    return (units[:, None] * width + torch.arange(width) + offset).reshape(-1)


def build_masks(
    model: nn.Module,
    frozen_units: torch.Tensor,
    *,
    freeze_layers: tuple[int, ...] = (),
    train_embeddings: bool = True,
    train_norms: bool = True,
    train_lm_head: bool = True,
    layout: ModelLayout | None = None,
) -> ParamMasks:
    """Masks for freezing ``frozen_units`` (bool [units], flat order) and whole layers ``freeze_layers``.

    ``train_norms`` covers every tensor that is not a unit weight, an embedding or the LM head
    (norms, o/down biases). A tied embedding/LM head trains only if both flags allow it.
    """
    layout = layout or describe(model)
    space = UnitSpace.from_layout(layout)
    if frozen_units.shape != (space.size,):
        raise ValueError(f"frozen_units must be a bool vector of {space.size} units, got {tuple(frozen_units.shape)}")
    bad_layers = [layer for layer in freeze_layers if not 0 <= layer < layout.num_layers]
    if bad_layers:
        raise ValueError(f"freeze_layers {bad_layers} outside the model's layers 0-{layout.num_layers - 1}")
    frozen_units = frozen_units.clone().bool()
    heads, neurons = space.split(frozen_units)
    for layer in freeze_layers:
        heads[layer] = True
        neurons[layer] = True
    kv_groups = heads.reshape(layout.num_layers, layout.num_kv_heads, layout.group_size).all(2)

    names = {id(parameter): name for name, parameter in model.named_parameters()}
    frozen_index: dict[tuple[str, int], list[torch.Tensor]] = {}  # (weight name, dim) -> index pieces
    row_biases: dict[str, str] = {}  # weight name -> bias name sharing its rows
    hd = layout.head_dim
    for projections in layout.layers:
        i = projections.index
        pieces = [
            (projections.q, _unit_rows(heads[i], hd, projections.q.offset)),
            (projections.k, _unit_rows(kv_groups[i], hd, projections.k.offset)),
            (projections.v, _unit_rows(kv_groups[i], hd, projections.v.offset)),
            (projections.gate, _unit_rows(neurons[i], 1, projections.gate.offset)),
            (projections.up, _unit_rows(neurons[i], 1, projections.up.offset)),
        ]
        for part, index in pieces:
            weight = names[id(part.linear.weight)]
            frozen_index.setdefault((weight, 0), []).append(index)
            if part.linear.bias is not None:
                row_biases[weight] = names[id(part.linear.bias)]
        for linear, index in ((projections.o, _unit_rows(heads[i], hd)), (projections.down, _unit_rows(neurons[i], 1))):
            frozen_index.setdefault((names[id(linear.weight)], 1), []).append(index)

    parameters = dict(model.named_parameters())
    masks = ParamMasks(frozen_units, kv_groups)

    def freeze(name: str, dim: int, index: torch.Tensor) -> None:
        index = torch.unique(index)
        if index.numel() == parameters[name].shape[dim]:
            masks.whole.add(name)
        elif index.numel():
            masks.slices[name] = SliceMask(dim, index)

    for (weight, dim), index_pieces in frozen_index.items():
        index = torch.cat(index_pieces)
        freeze(weight, dim, index)
        if weight in row_biases:
            freeze(row_biases[weight], 0, index)

    unit_tensors = {weight for weight, _ in frozen_index} | set(row_biases.values())
    embeddings = {names[id(model.get_input_embeddings().weight)]}
    output = model.get_output_embeddings()
    lm_head = {names[id(output.weight)]} if output is not None else set()
    frozen_layer_prefixes = tuple(f"{layout.layers_path}.{layer}." for layer in freeze_layers)
    for name in parameters:
        if name.startswith(frozen_layer_prefixes):
            masks.whole.add(name)
        elif name in unit_tensors:
            continue
        elif name in embeddings or name in lm_head:
            if (name in embeddings and not train_embeddings) or (name in lm_head and not train_lm_head):
                masks.whole.add(name)
        elif not train_norms:
            masks.whole.add(name)
    for name in masks.whole:
        masks.slices.pop(name, None)
    return masks

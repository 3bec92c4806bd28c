"""Per-tensor training masks at unit granularity, built from a set of frozen units.

A frozen head owns its q rows and o columns; a frozen neuron owns its gate and up rows and its
down column; fused Phi-3 projections are handled through the layout's row offsets.

Two rules say what else a frozen unit holds still. ``function`` (the default) keeps the unit's
function of its layer's input: a frozen head also freezes its KV group's k/v rows, which it
reads, and the norms its output passes through (the pre-attention norm, Qwen3/Gemma3 q_norm and
k_norm, Gemma's post-attention norm); a frozen neuron freezes the pre-MLP norm and Gemma's
post-FFN norm. These are shared, so heads and neurons beside a frozen one lose them too; the
result states how many parameters that froze beyond ``rows``. ``rows`` is the older rule: k/v
rows freeze only when every query head of the group is frozen, and norms always train, so under
grouped-query attention a "frozen" head's attention still changes.
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
from .config import FREEZE_RULES

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
    rule: str = "function"
    # Parameters frozen by the rule beyond what ``rows`` freezes: {"kv_rows": n, "norms": n}.
    beyond_rows: dict[str, int] = field(default_factory=dict)

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

    def trainable_numel(self, name: str, parameter: torch.Tensor) -> int:
        """How many elements of ``parameter`` train."""
        if name in self.whole:
            return 0
        frozen = 0
        if name in self.slices:
            part = self.slices[name]
            frozen = part.index.numel() * parameter.numel() // parameter.shape[part.dim]
        return parameter.numel() - frozen

    def summary(self, model: nn.Module, space: UnitSpace) -> dict:
        total = trainable = 0
        for name, parameter in model.named_parameters():
            total += parameter.numel()
            trainable += self.trainable_numel(name, parameter)
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
            "freeze_rule": self.rule,
            "frozen_beyond_rows_rule": {**self.beyond_rows, "parameters": sum(self.beyond_rows.values())},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = {"frozen_units": self.frozen_units, "frozen_kv_groups": self.frozen_kv_groups}
        for name, part in self.slices.items():
            tensors[f"{'rows' if part.dim == 0 else 'columns'}/{name}"] = part.index.contiguous()
        metadata = {
            "format_version": "1",
            "whole": json.dumps(sorted(self.whole)),
            "rule": self.rule,
            "beyond_rows": json.dumps(self.beyond_rows),
        }
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
        return cls(
            tensors["frozen_units"],
            tensors["frozen_kv_groups"],
            set(json.loads(metadata["whole"])),
            slices,
            rule=metadata.get("rule", "rows"),  # files written before the rule existed used "rows"
            beyond_rows=json.loads(metadata.get("beyond_rows", "{}")),
        )


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
    rule: str = "function",
) -> ParamMasks:
    """Masks for freezing ``frozen_units`` (bool [units], flat order) and whole layers ``freeze_layers``.

    ``train_norms`` covers every tensor that is not a unit weight, an embedding or the LM head
    (norms, o/down biases). A tied embedding/LM head trains only if both flags allow it.
    ``rule``: what a frozen unit holds still beyond its own rows (module docstring).
    """
    if rule not in FREEZE_RULES:
        raise ValueError(f"rule must be one of {', '.join(FREEZE_RULES)}, got {rule!r}")
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
    by_group = heads.reshape(layout.num_layers, layout.num_kv_heads, layout.group_size)
    kv_groups = by_group.any(2) if rule == "function" else by_group.all(2)

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
    masks = ParamMasks(frozen_units, kv_groups, rule=rule)

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
    embeddings = {names[id(model.get_input_embeddings().weight)]}  # type: ignore[operator]  # a transformers model's method
    output = model.get_output_embeddings()  # type: ignore[operator]  # a transformers model's method
    lm_head = {names[id(output.weight)]} if output is not None else set()
    frozen_layer_prefixes = tuple(f"{layout.layers_path}.{layer}." for layer in freeze_layers)
    held_norms: tuple[str, ...] = ()  # module paths + "." of the norms frozen units pass through
    for projections in layout.layers if rule == "function" else ():
        if heads[projections.index].any():
            held_norms += tuple(f"{path}." for path in projections.head_norms)
        if neurons[projections.index].any():
            held_norms += tuple(f"{path}." for path in projections.neuron_norms)
    for name in parameters:
        if name.startswith(frozen_layer_prefixes) or (held_norms and name.startswith(held_norms)):
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
    if rule != "rows":
        masks.beyond_rows = _beyond_rows(
            masks, model, frozen_units, freeze_layers, train_embeddings, train_norms, train_lm_head, layout
        )
    return masks


def _beyond_rows(masks: ParamMasks, model: nn.Module, *rows_arguments) -> dict[str, int]:
    """Parameters ``masks`` freezes that the ``rows`` rule would train, as k/v rows and as norms."""
    frozen_units, freeze_layers, train_embeddings, train_norms, train_lm_head, layout = rows_arguments
    rows = build_masks(
        model,
        frozen_units,
        freeze_layers=freeze_layers,
        train_embeddings=train_embeddings,
        train_norms=train_norms,
        train_lm_head=train_lm_head,
        layout=layout,
        rule="rows",
    )
    kv = {id(part.linear.weight) for p in layout.layers for part in (p.k, p.v)}
    kv |= {id(part.linear.bias) for p in layout.layers for part in (p.k, p.v) if part.linear.bias is not None}
    counts = {"kv_rows": 0, "norms": 0}
    for name, parameter in model.named_parameters():
        extra = rows.trainable_numel(name, parameter) - masks.trainable_numel(name, parameter)
        if extra:
            # Phi-3's fused qkv counts as k/v: q rows freeze by the same rule under both.
            counts["kv_rows" if id(parameter) in kv else "norms"] += extra
    return counts

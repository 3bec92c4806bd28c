"""Safety-aware LoRA: adapters whose update ``ΔW = B·A`` touches only the trainable unit rows/columns.

The unit masks (``build_masks``, budget mode: everything but RU frozen) say which rows of q/k/v/gate/up
and which columns of o/down may change. A LoRA update on a row-unit projection changes row ``i`` of W
through row ``i`` of ``lora_B``; on a column-unit projection, column ``j`` through column ``j`` of
``lora_A``. So the frozen rows of ``lora_B`` (zero at init) and the frozen columns of ``lora_A`` are
zeroed and held there by the same ``ParamMasks`` the full-rank trainer uses (gradients zeroed, packed
AdamW never writes them): ``ΔW`` is exactly zero outside RU, and the adapter is a normal PEFT adapter
(``save_pretrained``, ``merge_and_unload``). Tensors the masks freeze whole get no adapter.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..architectures import ModelLayout
from .config import FinetuneConfig
from .masks import ParamMasks, SliceMask

ADAPTER_DIR = "adapter"
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraTarget:
    """One adapted projection: ``dim`` 0 when its units are rows (q/k/v/gate/up), 1 for columns (o/down)."""

    path: str  # module path in the base model
    dim: int
    frozen: torch.Tensor  # int64 rows (dim 0) or columns (dim 1) of the weight outside the trainable units


def lora_targets(model: nn.Module, masks: ParamMasks, layout: ModelLayout) -> list[LoraTarget]:
    """The unit projections with a trainable row/column under ``masks``, and their frozen rows/columns."""
    names = {id(module): path for path, module in model.named_modules()}
    targets: dict[str, LoraTarget] = {}
    for layer in layout.layers:
        pieces = [(part.linear, 0) for part in (layer.q, layer.k, layer.v, layer.gate, layer.up)]
        for linear, dim in [*pieces, (layer.o, 1), (layer.down, 1)]:
            path = names[id(linear)]
            weight = f"{path}.weight"
            if path in targets or weight in masks.whole:
                continue  # fused projections appear once per part; frozen whole: nothing to adapt
            part = masks.slices.get(weight)
            if part is not None and part.dim != dim:
                raise ValueError(f"{weight} is frozen along dim {part.dim}, its units lie along dim {dim}")
            frozen = part.index if part is not None else torch.zeros(0, dtype=torch.long)
            targets[path] = LoraTarget(path, dim, frozen)
    return list(targets.values())


def lora_alpha(config: FinetuneConfig) -> int:
    """The LoRA scaling numerator: ``lora_alpha``, or twice the rank when unset."""
    return config.lora_alpha if config.lora_alpha is not None else 2 * config.lora_rank


def wrap_model(model: nn.Module, targets: list[LoraTarget], config: FinetuneConfig, base_source: str):
    """``model`` wrapped by peft with an adapter on ``targets``, restricted to their trainable rows/columns.

    Returns ``(peft_model, masks)``: the masks freeze every base tensor whole and the frozen rows of
    ``lora_B`` / columns of ``lora_A``, for ``trainer.train``.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("lora_rank needs the 'peft' extra: pip install 'ssah-audit[peft]'") from None
    if not targets:
        raise ValueError("nothing to adapt: the masks leave no unit row or column trainable")
    lora_config = LoraConfig(
        r=config.lora_rank,
        lora_alpha=lora_alpha(config),
        lora_dropout=0.0,
        bias="none",
        target_modules=[target.path for target in targets],
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.seed)  # lora_A's random init
    peft_model = get_peft_model(typing.cast(typing.Any, model), lora_config)
    peft_model.peft_config[ADAPTER_NAME].base_model_name_or_path = base_source
    modules = dict(peft_model.named_modules())
    parameter_names = {id(parameter): name for name, parameter in peft_model.named_parameters()}
    slices: dict[str, SliceMask] = {}
    for target in targets:
        module = modules[f"base_model.model.{target.path}"]
        factor = module.lora_B[ADAPTER_NAME] if target.dim == 0 else module.lora_A[ADAPTER_NAME]
        weight = factor.weight
        with torch.no_grad():
            weight.index_fill_(target.dim, target.frozen.to(weight.device), 0.0)
        if target.frozen.numel():
            slices[parameter_names[id(weight)]] = SliceMask(target.dim, target.frozen)
    trainable = {parameter_names[id(p)] for p in peft_model.parameters() if p.requires_grad}
    whole = {name for name, _ in peft_model.named_parameters() if name not in trainable}
    units = torch.zeros(0, dtype=torch.bool)
    masks = ParamMasks(units, torch.zeros(0, 0, dtype=torch.bool), whole=whole, slices=slices, rule="lora")
    return peft_model, masks


def lora_summary(peft_model: nn.Module, masks: ParamMasks, targets: list[LoraTarget], config: FinetuneConfig) -> dict:
    """Adapter size: entries that may be non-zero (trainable) against the base model's parameters."""
    adapter = trainable = base = 0
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:
            adapter += parameter.numel()
            trainable += masks.trainable_numel(name, parameter)
        else:
            base += parameter.numel()
    return {
        "rank": config.lora_rank,
        "alpha": lora_alpha(config),
        "targets": len(targets),
        "adapter_parameters": adapter,
        "trainable_parameters": trainable,
        "trainable_fraction": trainable / max(base, 1),
    }


def save_adapter(peft_model, out_dir: Path) -> Path:
    """The PEFT adapter directory (``adapter_config.json`` naming the ssah source of the base)."""
    path = out_dir / ADAPTER_DIR
    peft_model.save_pretrained(str(path))
    config_path = path / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = peft_model.peft_config[ADAPTER_NAME].base_model_name_or_path
    config_path.write_text(json.dumps(saved, indent=2) + "\n")
    return path

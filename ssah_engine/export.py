"""Write an ablated model as a normal Hugging Face checkpoint that plain transformers loads.

The removed units' weights are zeroed for good and their compensation (a removed unit's mean
contribution, ``ablation.py``) is added to the bias of the projection it writes into (o_proj,
down_proj). Where the architecture has no such bias its config flags (``attention_bias``,
``mlp_bias``) are set so that ``from_pretrained`` builds them; Qwen2 and Mistral, which hard-code
them off, are written as the Llama architecture they equal when every layer attends in full.
Anything else refuses a compensation other than ``none``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .ablation import remove_units
from .architectures import describe
from .devices import offloaded
from .loading import LoadedModel
from .unitmap import UnitMap

logger = logging.getLogger(__name__)

# Families that are Llama plus hard-coded biases off (and optional sliding windows).
_LLAMA_EQUIVALENT = ("qwen2", "mistral")
_NOT_LLAMA_KEYS = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "architectures")


class ExportError(ValueError):
    """The ablated model cannot be written as a checkpoint that loads with plain transformers."""


def bake_ablation(model: nn.Module, unit_map: UnitMap, units: torch.Tensor, *, compensation: str) -> int:
    """Remove ``units`` from ``model`` for good, adding the compensation to o_proj/down_proj biases.

    Creates the biases that are missing; returns how many projections received a constant.
    """
    if any(offloaded(module) for module in model.modules()):
        raise ExportError("an offloaded model cannot be rewritten in place: load it without disk or CPU offload")
    constants = remove_units(model, unit_map, units, compensation=compensation)
    with torch.no_grad():
        for linear, constant in constants:
            if linear.bias is None:
                linear.bias = nn.Parameter(
                    torch.zeros(linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device)
                )
            linear.bias.add_(constant.to(linear.bias.device, linear.bias.dtype))
    return len(constants)


def _biased_config(config: Any):
    """A config whose architecture builds a bias on every o_proj and down_proj, or ExportError."""
    from transformers import LlamaConfig

    if hasattr(config, "attention_bias") and hasattr(config, "mlp_bias"):
        biased = copy.deepcopy(config)
        biased.attention_bias, biased.mlp_bias = True, True
        return biased
    if config.model_type in _LLAMA_EQUIVALENT:
        layer_types = getattr(config, "layer_types", None) or []
        windowed = getattr(config, "sliding_window", None) is not None  # Qwen2 sets it to None when unused
        if windowed or any(kind != "full_attention" for kind in layer_types):
            raise ExportError(f"{config.model_type} with sliding-window layers has no Llama equivalent to carry biases")
        values = {key: value for key, value in config.to_dict().items() if key not in _NOT_LLAMA_KEYS}
        values.pop("model_type", None)
        logger.info("writing the %s model as LlamaForCausalLM (the same network, with biases)", config.model_type)
        return LlamaConfig(**{**values, "attention_bias": True, "mlp_bias": True})
    raise ExportError(
        f"a {config.model_type} checkpoint has no bias on o_proj/down_proj and no config flag to add one, so a "
        "compensation cannot be baked in; export with --compensation none"
    )


def _biased_model(model: nn.Module) -> nn.Module:
    """The same weights in an architecture that declares the biases; missing ones are zero."""
    from transformers import AutoModelForCausalLM

    config = _biased_config(model.config)
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        target = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for layer in describe(target).layers:
        if layer.o.bias is None or layer.down.bias is None:
            raise ExportError(f"{config.model_type}: setting the bias flags did not give o_proj/down_proj a bias")
    state = dict(model.state_dict())
    wanted = target.state_dict()
    unexpected = sorted(set(state) - set(wanted))
    if unexpected:
        raise ExportError(f"the {config.model_type} architecture has no place for {unexpected[:3]}")
    device = next(model.parameters()).device
    for key, tensor in wanted.items():
        if key not in state:
            if not key.endswith(".bias"):
                raise ExportError(f"the {config.model_type} architecture needs {key}, which the model lacks")
            state[key] = torch.zeros(tensor.shape, dtype=tensor.dtype, device=device)
    target.load_state_dict(state, strict=True, assign=True)
    target.generation_config = model.generation_config
    return target


def export_ablated(
    loaded: LoadedModel,
    unit_map: UnitMap,
    units: torch.Tensor,
    out: str | Path,
    *,
    compensation: str = "none",
    card: dict | None = None,
) -> Path:
    """Write ``loaded`` without ``units`` to ``out`` (weights, config, tokenizer, model card).

    The model in ``loaded`` is changed in place (the removal is permanent); ``card`` holds extra
    fields for the model card (the ablation spec, unit map path).
    """
    from .model_card import write_model_card

    if compensation != "none":
        _biased_config(loaded.model.config)  # refuse before any weight is touched
    model = loaded.model
    baked = bake_ablation(model, unit_map, units, compensation=compensation)
    if compensation != "none":
        model = _biased_model(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # type: ignore[operator]  # a transformers model's method
    loaded.tokenizer.save_pretrained(out)
    write_model_card(
        out,
        kind="ablated",
        source=loaded.source,
        unit_map=unit_map,
        masks={
            "removed_units": int(units.sum()),
            "compensation": compensation,
            "biases_with_compensation": baked,
            "architecture": type(model).__name__,
            **(card or {}),
        },
    )
    logger.info("wrote the ablated model (%d units removed) to %s", int(units.sum()), out)
    return out

"""Interventions with a refusal direction: project it out everywhere, add it at one layer, or bake it in.

``ablate_direction`` removes the direction from everything that writes to the residual stream (the
token embeddings, each attention block's and each MLP's output), so no layer's input or output holds a
component along it. Gemma's writers are the post-attention and post-feedforward norms, the others'
o_proj and down_proj. ``orthogonalize_weights`` does the same in the weights (an exportable checkpoint;
Llama-style families only, Gemma's post-norms would rescale the direction back in).
"""

from __future__ import annotations

import typing
from contextlib import contextmanager

import torch
from torch import nn

from ..architectures import describe, family_of
from ..devices import offloaded

_GEMMA_WRITERS = ("post_attention_layernorm", "post_feedforward_layernorm")


def residual_writers(model: nn.Module) -> list[nn.Module]:
    """Every module whose output is added to the residual stream, embeddings first."""
    layout = describe(model)
    writers = [model.get_input_embeddings()]  # type: ignore[operator]  # a transformers model's method
    layers = typing.cast(nn.ModuleList, model.get_submodule(layout.layers_path))
    gemma = family_of(model).name.startswith("gemma")
    for layer, projections in zip(layers, layout.layers):
        if gemma:
            writers.extend(layer.get_submodule(name) for name in _GEMMA_WRITERS)
        else:
            writers.extend((projections.o, projections.down))
    return writers


def _unit(direction: torch.Tensor) -> torch.Tensor:
    norm = direction.norm()
    if direction.dim() != 1 or not torch.isfinite(norm) or norm == 0:
        raise ValueError("the direction must be a non-zero vector")
    return direction / norm


def _map_output(output, fn):
    if torch.is_tensor(output):
        return fn(output)
    return (fn(output[0]), *output[1:])


@contextmanager
def ablate_direction(model: nn.Module, direction: torch.Tensor):
    """Within the block, every residual-stream write of ``model`` loses its component along ``direction``."""
    unit = _unit(direction.detach().float())
    cache: dict = {}

    def project(hidden: torch.Tensor) -> torch.Tensor:
        key = (hidden.device, hidden.dtype)
        if key not in cache:
            cache[key] = unit.to(device=hidden.device, dtype=hidden.dtype)
        r = cache[key]
        return hidden - (hidden @ r)[..., None] * r

    handles = [
        module.register_forward_hook(lambda _m, _a, out: _map_output(out, project))
        for module in residual_writers(model)
    ]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_direction(model: nn.Module, vector: torch.Tensor, layer: int, alpha: float):
    """Within the block, ``alpha * vector`` is added to decoder layer ``layer``'s output at every position."""
    layout = describe(model)
    if not 0 <= layer < layout.num_layers:
        raise ValueError(f"layer must be in [0, {layout.num_layers}), got {layer}")
    shift = float(alpha) * vector.detach().float()
    target = typing.cast(nn.ModuleList, model.get_submodule(layout.layers_path))[layer]

    def add(hidden: torch.Tensor) -> torch.Tensor:
        return hidden + shift.to(device=hidden.device, dtype=hidden.dtype)

    handle = target.register_forward_hook(lambda _m, _a, out: _map_output(out, add))
    try:
        yield model
    finally:
        handle.remove()


def orthogonalize_weights(model: nn.Module, direction: torch.Tensor) -> nn.Module:
    """Remove ``direction`` from the weights that write to the residual stream, in place (not reversible)."""
    if family_of(model).name.startswith("gemma"):
        raise ValueError(
            "weight orthogonalisation is not exact for Gemma (its post-norms rescale the writes); use ablate_direction"
        )
    if any(offloaded(module) for module in model.modules()):
        raise ValueError("an offloaded model cannot be rewritten in place: load it without disk or CPU offload")
    unit = _unit(direction.detach().double())
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight  # type: ignore[operator]  # a transformers model's method
        r = unit.to(embedding.device)
        embedding.copy_((embedding.double() - (embedding.double() @ r)[:, None] * r).to(embedding.dtype))
        layout = describe(model)
        for projections in layout.layers:
            for linear in (projections.o, projections.down):
                weight = linear.weight.double()
                r = unit.to(weight.device)
                linear.weight.copy_((weight - r[:, None] * (r @ weight)[None, :]).to(linear.weight.dtype))
                if linear.bias is not None:
                    bias = linear.bias.double()
                    linear.bias.copy_((bias - (bias @ r) * r).to(linear.bias.dtype))
    return model

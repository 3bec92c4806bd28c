"""Where the units of each supported model family live.

A small adapter per family names the decoder layers and the projections that make up an
attention head and an MLP neuron, so the rest of the engine never assumes a module path.
Fused projections (Phi-3's ``qkv_proj`` and ``gate_up_proj``) are described by row offsets.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from torch import nn


class UnsupportedArchitectureError(ValueError):
    """The model's family has no adapter."""


@dataclass(frozen=True)
class Family:
    """Module names of one model family, relative to a decoder layer."""

    name: str
    model_types: tuple[str, ...]
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    qkv: str | None = None  # fused q/k/v projection, rows in q, k, v order
    o: str = "self_attn.o_proj"
    gate: str = "mlp.gate_proj"
    up: str = "mlp.up_proj"
    gate_up: str | None = None  # fused gate/up projection, rows in gate, up order
    down: str = "mlp.down_proj"
    # Norms a head's output passes through (pre-attention, q/k norms, a post-attention norm) and
    # those a neuron's passes through: training them changes a frozen unit's function.
    head_norms: tuple[str, ...] = ("input_layernorm",)
    neuron_norms: tuple[str, ...] = ("post_attention_layernorm",)  # Llama-style: the pre-MLP norm


QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")
GEMMA_HEAD_NORMS = ("input_layernorm", "post_attention_layernorm")
GEMMA_NEURON_NORMS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",)),
    Family("mistral", ("mistral",)),
    Family("qwen2", ("qwen2",)),
    Family("qwen3", ("qwen3",), head_norms=("input_layernorm", *QK_NORMS)),
    Family("gemma2", ("gemma2",), head_norms=GEMMA_HEAD_NORMS, neuron_norms=GEMMA_NEURON_NORMS),
    Family(
        "gemma3", ("gemma3", "gemma3_text"), head_norms=(*GEMMA_HEAD_NORMS, *QK_NORMS), neuron_norms=GEMMA_NEURON_NORMS
    ),
    Family("phi3", ("phi3",), qkv="self_attn.qkv_proj", gate_up="mlp.gate_up_proj"),
)

# Where the list of decoder layers sits, tried in order (multimodal Gemma 3 nests the text model).
_LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers")


def supported_families() -> list[str]:
    return [family.name for family in FAMILIES]


@dataclass(frozen=True)
class RowSlice:
    """Rows ``offset .. offset + size`` of a linear layer's weight (one unit's share of it)."""

    linear: nn.Linear
    path: str
    offset: int


@dataclass(frozen=True)
class LayerProjections:
    """The projections of one decoder layer, fused ones described by row offsets."""

    index: int
    q: RowSlice
    k: RowSlice
    v: RowSlice
    o: nn.Linear
    o_path: str
    gate: RowSlice
    up: RowSlice
    down: nn.Linear
    down_path: str
    head_norms: tuple[str, ...] = ()  # module paths of the norms every head of the layer passes through
    neuron_norms: tuple[str, ...] = ()  # and those every neuron passes through


@dataclass(frozen=True)
class ModelLayout:
    """Shapes and module paths of every unit of a model."""

    family: str
    layers_path: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    layers: tuple[LayerProjections, ...]

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads


def family_of(model: nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnsupportedArchitectureError(
        f"model type {model_type!r} is not supported; supported families: " + ", ".join(supported_families())
    )


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _LAYER_PATHS:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise UnsupportedArchitectureError("could not find the decoder layers of the model")


def _text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", None) or config


def _checked_path(layer: nn.Module, prefix: str, name: str) -> str:
    layer.get_submodule(name)  # raises AttributeError if a checkpoint lacks the norm its family has
    return prefix + name


def describe(model: nn.Module) -> ModelLayout:
    """Read the unit layout of ``model``; raises UnsupportedArchitectureError for other families."""
    family = family_of(model)
    config = _text_config(model)
    layers_path, layers = _find_layers(model)
    num_heads = config.num_attention_heads
    num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim

    projections = []
    for index, layer in enumerate(layers):
        prefix = f"{layers_path}.{index}."

        def row_slice(name: str, offset: int = 0) -> RowSlice:
            return RowSlice(typing.cast(nn.Linear, layer.get_submodule(name)), prefix + name, offset)

        if family.qkv:
            q, k, v = row_slice(family.qkv), row_slice(family.qkv, q_size), row_slice(family.qkv, q_size + kv_size)
        else:
            q, k, v = row_slice(family.q), row_slice(family.k), row_slice(family.v)
        if family.gate_up:
            gate, up = row_slice(family.gate_up), row_slice(family.gate_up, config.intermediate_size)
        else:
            gate, up = row_slice(family.gate), row_slice(family.up)
        projections.append(
            LayerProjections(
                index=index,
                q=q,
                k=k,
                v=v,
                o=typing.cast(nn.Linear, layer.get_submodule(family.o)),
                o_path=prefix + family.o,
                gate=gate,
                up=up,
                down=typing.cast(nn.Linear, layer.get_submodule(family.down)),
                down_path=prefix + family.down,
                head_norms=tuple(_checked_path(layer, prefix, name) for name in family.head_norms),
                neuron_norms=tuple(_checked_path(layer, prefix, name) for name in family.neuron_norms),
            )
        )
    layout = ModelLayout(
        family=family.name,
        layers_path=layers_path,
        num_layers=len(layers),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        layers=tuple(projections),
    )
    _check_shapes(layout)
    return layout


def _check_shapes(layout: ModelLayout) -> None:
    """Fail loudly if a checkpoint's shapes disagree with its config (e.g. a pruned model)."""
    if layout.num_heads % layout.num_kv_heads:
        raise UnsupportedArchitectureError(
            f"{layout.num_heads} query heads do not split into {layout.num_kv_heads} key/value groups"
        )
    first = layout.layers[0]
    if first.o.in_features != layout.num_heads * layout.head_dim:
        raise UnsupportedArchitectureError(
            f"{first.o_path} takes {first.o.in_features} inputs, expected heads x head_dim = "
            f"{layout.num_heads * layout.head_dim}"
        )
    if first.down.in_features != layout.intermediate_size:
        raise UnsupportedArchitectureError(
            f"{first.down_path} takes {first.down.in_features} inputs, expected intermediate_size "
            f"{layout.intermediate_size}"
        )

"""The unit space: every attention head and MLP neuron of a model, in one flat order.

Flat order is all heads (layer-major), then all neurons (layer-major). Per-unit vectors
(scores, labels, parameter weights) use this order everywhere in the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .architectures import ModelLayout


@dataclass(frozen=True)
class UnitSpace:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    @classmethod
    def from_layout(cls, layout: ModelLayout) -> "UnitSpace":
        return cls(
            num_layers=layout.num_layers,
            num_heads=layout.num_heads,
            num_kv_heads=layout.num_kv_heads,
            head_dim=layout.head_dim,
            hidden_size=layout.hidden_size,
            intermediate_size=layout.intermediate_size,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def total_heads(self) -> int:
        return self.num_layers * self.num_heads

    @property
    def total_neurons(self) -> int:
        return self.num_layers * self.intermediate_size

    @property
    def size(self) -> int:
        return self.total_heads + self.total_neurons

    @property
    def head_weight(self) -> float:
        """Weights one head owns: its q rows, o columns and its share of the k/v rows of its group."""
        own = 2 * self.head_dim * self.hidden_size
        shared_kv = 2 * self.head_dim * self.hidden_size / self.group_size
        return own + shared_kv

    @property
    def neuron_weight(self) -> float:
        """Weights one neuron owns: a gate row, an up row and a down column."""
        return 3.0 * self.hidden_size

    def param_weights(self) -> torch.Tensor:
        weights = torch.empty(self.size, dtype=torch.float64)
        weights[: self.total_heads] = self.head_weight
        weights[self.total_heads :] = self.neuron_weight
        return weights

    def split(self, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat per-unit vector -> (heads [layers, heads], neurons [layers, neurons])."""
        if vector.shape[0] != self.size:
            raise ValueError(f"expected {self.size} units, got {vector.shape[0]}")
        heads = vector[: self.total_heads].reshape(self.num_layers, self.num_heads)
        neurons = vector[self.total_heads :].reshape(self.num_layers, self.intermediate_size)
        return heads, neurons

    def join(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        return torch.cat([heads.reshape(-1), neurons.reshape(-1)])

    def describe_unit(self, flat_index: int, layers_path: str = "model.layers") -> str:
        """Stable human name of a unit, e.g. ``model.layers.3.mlp.down_proj channel 117``."""
        if flat_index < self.total_heads:
            layer, head = divmod(flat_index, self.num_heads)
            return f"{layers_path}.{layer}.self_attn head {head}"
        layer, neuron = divmod(flat_index - self.total_heads, self.intermediate_size)
        return f"{layers_path}.{layer}.mlp.down_proj channel {neuron}"

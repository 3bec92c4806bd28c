"""Remove a set of units from a model, reversibly, optionally keeping their average contribution.

A removed head loses its query rows and its o_proj columns (and its key/value rows once every
query head of its group is removed); a removed neuron loses its gate/up rows and down_proj
column. With compensation, their mean output (mean input x W_out) on a calibration pass is added
back as a constant: ``safety`` is the method page's (FLAP's) bias compensation, ``utility`` uses the
benign pass, ``pooled`` both passes weighted by their response tokens, ``none`` plain zeroing.

Which one is used decides the answer: on an aligned model the safety-pass mean of the SCU carries
the refusal mode, so "removing" them with it makes the model refuse nearly everything, while zeroing
removes the refusals (docs/evaluation.md). Leaving the context restores every weight bit for bit.
"""

from __future__ import annotations

import typing
from contextlib import contextmanager

import torch
from torch import nn

from .architectures import RowSlice, describe
from .devices import offloaded, real_weights
from .unitmap import UnitMap


def _head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Indices of the head_dim channels (rows of q, columns of o) of each head in ``heads``."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


class _Saved:
    """Original slices of weights, written back on restore.

    An offloaded linear (its weights on ``meta`` between calls, ``devices.offloaded``) cannot be written in
    place; its rows are zeroed on its output and its columns on its input instead, by hooks removed on
    restore: the same numbers, since a zero weight row gives a zero output and a zero column ignores its input.
    """

    def __init__(self):
        self.rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.columns: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.handles: list = []

    def zero_rows(self, part: RowSlice, rows: torch.Tensor) -> None:
        if offloaded(part.linear):
            self.handles.append(part.linear.register_forward_hook(_zero_output(rows + part.offset)))
            return
        index = (rows + part.offset).to(part.linear.weight.device)
        for tensor in (part.linear.weight, part.linear.bias):
            if tensor is not None:
                self.rows.append((tensor, index, tensor[index].clone()))
                tensor[index] = 0

    def zero_columns(self, linear: nn.Linear, columns: torch.Tensor) -> None:
        if offloaded(linear):
            self.handles.append(linear.register_forward_pre_hook(_zero_input(columns)))
            return
        index = columns.to(linear.weight.device)
        self.columns.append((linear.weight, index, linear.weight[:, index].clone()))
        linear.weight[:, index] = 0

    def restore(self) -> None:
        for handle in self.handles:
            handle.remove()
        for tensor, index, original in self.rows:
            tensor[index] = original
        for tensor, index, original in self.columns:
            tensor[:, index] = original


def _zero_output(channels: torch.Tensor):
    def hook(_module, _args, output):
        return output.index_fill(-1, channels.to(output.device), 0)

    return hook


def _zero_input(channels: torch.Tensor):
    def hook(_module, args):
        return (args[0].index_fill(-1, channels.to(args[0].device), 0), *args[1:])

    return hook


def _add_constant(linear: nn.Linear, constant: torch.Tensor):
    def hook(_module, _args, output):
        return output + constant.to(output.device)  # free unless a device map moved the output

    return linear.register_forward_hook(hook)


COMPENSATIONS = ("none", "safety", "utility", "pooled")
DEFAULT_COMPENSATION = "none"


def compensation_means(unit_map: UnitMap, compensation: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(head input means, neuron input means) that stand in for removed units; None for plain zeroing."""
    if compensation not in COMPENSATIONS:
        raise ValueError(f"compensation must be one of {', '.join(COMPENSATIONS)}, got {compensation!r}")
    if compensation == "none":
        return None
    safety = (unit_map.head_input_mean, unit_map.neuron_input_mean)
    if compensation == "safety":
        return safety
    if unit_map.utility_head_input_mean is None or unit_map.utility_neuron_input_mean is None:
        raise ValueError(
            f"compensation {compensation!r} needs the utility-pass means, which this unit map does not hold "
            "(it was written by an older version); audit the model again"
        )
    utility = (unit_map.utility_head_input_mean, unit_map.utility_neuron_input_mean)
    if compensation == "utility":
        return utility
    tokens = [float(unit_map.data.get(name, {}).get("response_tokens") or 1) for name in ("safety", "utility")]
    share = tokens[0] / (tokens[0] + tokens[1])
    return typing.cast(
        tuple[torch.Tensor, torch.Tensor], tuple(share * s + (1 - share) * u for s, u in zip(safety, utility))
    )


@contextmanager
def ablate(model: nn.Module, unit_map: UnitMap, units: torch.Tensor, *, compensation: str = DEFAULT_COMPENSATION):
    """Within the block, ``model`` runs without the units where ``units`` (bool [units]) is True.

    ``compensation`` says what replaces their output (module docstring); ``none`` zeroes them.
    """
    saved, handles = _Saved(), []
    try:
        for linear, constant in remove_units(model, unit_map, units, compensation=compensation, saved=saved):
            handles.append(_add_constant(linear, constant))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            saved.restore()


def remove_units(
    model: nn.Module,
    unit_map: UnitMap,
    units: torch.Tensor,
    *,
    compensation: str = DEFAULT_COMPENSATION,
    saved: _Saved | None = None,
) -> list[tuple[nn.Linear, torch.Tensor]]:
    """Zero the weights of the removed units in place; return (output projection, constant) to add back.

    ``saved`` (when given) keeps the original slices so that they can be restored; without it the
    removal is permanent, as for an export that bakes the constants into biases.
    """
    layout = describe(model)
    space = unit_map.space
    if (layout.num_layers, layout.num_heads, layout.intermediate_size) != (
        space.num_layers,
        space.num_heads,
        space.intermediate_size,
    ):
        raise ValueError("the unit map was made for a model of another shape")
    if units.dtype != torch.bool or units.shape[0] != space.size:
        raise ValueError(f"units must be a bool mask over {space.size} units")
    head_mask, neuron_mask = space.split(units)
    means = compensation_means(unit_map, compensation)
    saved = saved if saved is not None else _Saved()
    constants: list[tuple[nn.Linear, torch.Tensor]] = []
    with torch.no_grad():
        for layer, heads_off, neurons_off in zip(layout.layers, head_mask, neuron_mask):
            heads = heads_off.nonzero().flatten()
            neurons = neurons_off.nonzero().flatten()
            if len(heads):
                channels = _head_channels(heads, layout.head_dim)
                if means is not None:
                    mean = means[0][layer.index, channels]
                    constants.append((layer.o, _contribution(layer.o, channels, mean)))
                saved.zero_rows(layer.q, channels)
                saved.zero_columns(layer.o, channels)
                groups = heads_off.reshape(layout.num_kv_heads, layout.group_size).all(1).nonzero().flatten()
                if len(groups):
                    kv_channels = _head_channels(groups, layout.head_dim)
                    saved.zero_rows(layer.k, kv_channels)
                    saved.zero_rows(layer.v, kv_channels)
            if len(neurons):
                if means is not None:
                    mean = means[1][layer.index, neurons]
                    constants.append((layer.down, _contribution(layer.down, neurons, mean)))
                saved.zero_rows(layer.gate, neurons)
                saved.zero_rows(layer.up, neurons)
                saved.zero_columns(layer.down, neurons)
    return constants


def _contribution(linear: nn.Linear, channels: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """W_out[:, channels] @ mean: the removed channels' average output, from the original weights."""
    with real_weights(linear):  # an offloaded linear's weights, loaded for the product
        weight = linear.weight[:, channels.to(linear.weight.device)].float()
        return (weight @ mean.to(weight.device).float()).to(linear.weight.dtype)

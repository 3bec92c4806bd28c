"""Score every head and neuron of a model on one calibration set.

All methods read the inputs of the output projections (o_proj for heads, down_proj for
neurons) on response tokens only, through forward pre-hooks that keep streaming statistics.
WIFV and Wanda run the decoder backbone only (no logits layer), and run the token prefix that
every pair shares (the chat template's system turn, typically) once, reusing its key/value
cache: those are prompt tokens, never scored, so the statistics are unchanged. SNIP needs a
backward pass through the whole model.
"""

from __future__ import annotations

import copy
import logging
import typing
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..architectures import LayerProjections, ModelLayout
from ..audit_config import METHODS
from ..devices import input_device, offloaded, real_weights
from ..encoding import Batch
from ..kv_cache import cache_argument, returned_cache
from ..units import UnitSpace
from .stats import ESTIMATORS

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class DatasetScores:
    """Per-unit z-scores (flat unit order) plus the activation statistics they came from."""

    scores: torch.Tensor  # [units] float64, z-scored per layer
    head_input_mean: torch.Tensor  # [layers, heads * head_dim] mean o_proj input
    neuron_input_mean: torch.Tensor  # [layers, neurons] mean down_proj input
    tokens: int


def zscore(values: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std with the unbiased std, as the authors' code does; a constant vector gives zeros."""
    values = values.double()
    std = values.std() if values.numel() > 1 else values.new_tensor(0.0)
    if not torch.isfinite(std) or std == 0:
        return torch.zeros_like(values)
    return (values - values.mean()) / std


@contextmanager
def record_unit_inputs(layout: ModelLayout, device: torch.device, estimator: str = "pooled"):
    """Collect channel statistics of every o_proj and down_proj input on the tokens marked in ``mask``.

    Yields ``(head_stats, neuron_stats, select)``; call ``select(response_mask)`` with the
    batch's [batch, seq] mask before each forward pass. ``estimator`` picks the statistic
    (``stats.ESTIMATORS``): pooled over all tokens, or FLAP's per-pair running update.
    """
    head_stats, neuron_stats = new_unit_stats(layout.layers, device, estimator)
    with hook_unit_inputs(layout.layers, head_stats, neuron_stats, estimator) as select:
        yield head_stats, neuron_stats, select


def new_unit_stats(layers: Sequence[LayerProjections], device: torch.device, estimator: str = "pooled"):
    """Empty o_proj and down_proj input statistics for ``layers``: ``(head_stats, neuron_stats)``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    stats_class = ESTIMATORS[estimator]
    head_stats = [stats_class(layer.o.in_features, device) for layer in layers]
    neuron_stats = [stats_class(layer.down.in_features, device) for layer in layers]
    return head_stats, neuron_stats


@contextmanager
def hook_unit_inputs(layers: Sequence[LayerProjections], head_stats: list, neuron_stats: list, estimator: str):
    """Feed the o_proj / down_proj inputs of ``layers`` into the given statistics; yields ``select``.

    The whole-model audit hooks every layer at once; the layer-streamed audit hooks one at a time.
    """
    rows: list = [None, None]  # flat [batch * seq] indices of the scored tokens; tokens per row (flap only)

    def select(response_mask: torch.Tensor) -> None:
        rows[0] = response_mask.reshape(-1).nonzero().squeeze(1)
        # Per-pair counts sync a GPU, so only the per-pair estimator asks for them.
        rows[1] = response_mask.sum(1).tolist() if estimator == "flap" else None

    def hook_for(stats):
        def hook(_module: nn.Module, args: tuple) -> None:
            # Under a device map the input may sit on another device than the mask and the statistics
            # (a pre-hook runs before accelerate's AlignDevicesHook moves it); .to() is free when they agree.
            inputs = args[0].detach()
            flat = inputs.reshape(-1, inputs.shape[-1])
            stats.update(flat.index_select(0, rows[0].to(flat.device)).to(stats.device), rows[1])

        return hook

    handles = []
    try:
        for layer, heads, neurons in zip(layers, head_stats, neuron_stats, strict=True):
            handles.append(layer.o.register_forward_pre_hook(hook_for(heads)))
            handles.append(layer.down.register_forward_pre_hook(hook_for(neurons)))
        yield select
    finally:
        for handle in handles:
            handle.remove()


def _backbone(model: nn.Module, layout: ModelLayout) -> nn.Module:
    return model.get_submodule(layout.layers_path.rsplit(".layers", 1)[0])


def score_dataset(
    model: nn.Module,
    layout: ModelLayout,
    batches: Iterable[Batch],
    *,
    method: str = "wifv",
    progress: Progress | None = None,
    share_prefix: bool = True,
    estimator: str = "pooled",
) -> DatasetScores:
    """Score all units of ``model`` on ``batches`` with ``method`` (wifv, wanda or snip).

    ``share_prefix`` runs the prefix common to every pair once (WIFV and Wanda only).
    ``estimator`` is the activation statistic: ``pooled`` (population variance over all response
    tokens) or ``flap`` (the authors' running update, WIFV only; feed batches in pair order).
    """
    if method not in METHODS:
        raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
    if estimator == "flap" and method != "wifv":
        raise ValueError(f"the flap estimator serves wifv only, not {method}")
    if method == "snip" and any(offloaded(module) for module in model.modules()):
        raise ValueError("snip needs every weight's gradient: load the model without offload (wifv or wanda can)")
    device = input_device(model)
    space = UnitSpace.from_layout(layout)
    snip_heads = torch.zeros(space.num_layers, space.num_heads, dtype=torch.float64)
    snip_neurons = torch.zeros(space.num_layers, space.intermediate_size, dtype=torch.float64)

    batches = list(batches)
    with record_unit_inputs(layout, device, estimator) as (head_stats, neuron_stats, select):
        if method == "snip":
            for done, batch in enumerate(batches, start=1):
                batch = batch.to(device)
                select(batch.response_mask)
                _snip_step(model, layout, batch, snip_heads, snip_neurons)
                if progress:
                    progress(done, len(batches))
        else:
            with torch.inference_mode():
                _run_backbone(_backbone(model, layout), batches, select, device, share_prefix, progress)

    tokens = head_stats[0].count
    if tokens == 0:
        raise ValueError("the calibration set has no response tokens to score")
    if method == "snip":
        head_scores = torch.stack([zscore(row) for row in snip_heads])
        neuron_scores = torch.stack([zscore(row) for row in snip_neurons])
    else:
        per_layer = [
            activation_scores(method, layer, heads, neurons, space)
            for layer, heads, neurons in zip(layout.layers, head_stats, neuron_stats)
        ]
        head_scores = torch.stack([heads for heads, _ in per_layer])
        neuron_scores = torch.stack([neurons for _, neurons in per_layer])
    return DatasetScores(
        scores=space.join(head_scores, neuron_scores).cpu(),
        head_input_mean=torch.stack([stats.mean for stats in head_stats]).cpu(),
        neuron_input_mean=torch.stack([stats.mean for stats in neuron_stats]).cpu(),
        tokens=tokens,
    )


def shared_prefix_length(batches: list[Batch]) -> int:
    """Tokens that open every sequence of every batch and precede every response token."""
    first = batches[0].input_ids[0]
    length = min(int(batch.response_mask.float().argmax(1).min()) for batch in batches)
    for batch in batches:
        differs = (batch.input_ids[:, :length] != first[:length]).any(0).nonzero()
        if len(differs):
            length = int(differs[0])
    return length


def _run_backbone(backbone, batches: list[Batch], select, device, share_prefix: bool, progress) -> None:
    """Forward every batch through the decoder layers (hooks collect statistics)."""
    prefix = shared_prefix_length(batches) if share_prefix else 0
    prefix_cache = None
    if prefix:
        prefix_ids = batches[0].input_ids[:1, :prefix].to(device)
        select(torch.zeros_like(prefix_ids, dtype=torch.bool))  # prompt tokens: not scored
        output = backbone(input_ids=prefix_ids, use_cache=True)
        prefix_cache = returned_cache(output)
    for done, batch in enumerate(batches, start=1):
        batch = batch.to(device)
        select(batch.response_mask[:, prefix:])
        if prefix_cache is None:
            backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        else:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(batch.input_ids.shape[0])
            backbone(
                input_ids=batch.input_ids[:, prefix:],
                attention_mask=batch.attention_mask,
                use_cache=True,
                **{cache_argument(backbone): cache},
            )
        if progress:
            progress(done, len(batches))


def activation_scores(method, layer, head_stats, neuron_stats, space: UnitSpace):
    """Per-layer head and neuron z-scores from activation statistics and output weights."""
    with real_weights(layer.o), real_weights(layer.down):  # offloaded weights loaded for the read
        o_weight = layer.o.weight.detach().double().to(head_stats.device)
        down_weight = layer.down.weight.detach().double().to(neuron_stats.device)
    if method == "wifv":
        # I_c = Var(x_c) * ||W_out[:, c]||^2; heads square it first (the method page, after FLAP).
        head_channels = (head_stats.variance * o_weight.square().sum(0)).square()
        neuron_channels = neuron_stats.variance * down_weight.square().sum(0)
    else:  # wanda: sum over the unit's output weights of |W| * ||X_c||_2
        head_channels = head_stats.sum_of_squares.sqrt() * o_weight.abs().sum(0)
        neuron_channels = neuron_stats.sum_of_squares.sqrt() * down_weight.abs().sum(0)
    heads = zscore(head_channels).reshape(space.num_heads, space.head_dim).mean(1)
    return heads, zscore(neuron_channels)


def _snip_step(model, layout: ModelLayout, batch: Batch, heads: torch.Tensor, neurons: torch.Tensor) -> None:
    """One backward pass on the response loss; add |W * dL/dW| summed over each unit's weights."""
    labels = batch.input_ids.masked_fill(~batch.response_mask, -100)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels, use_cache=False
        ).loss
        loss.backward()
    num_heads, head_dim = layout.num_heads, layout.head_dim
    group = layout.group_size
    for index, layer in enumerate(layout.layers):

        def saliency(linear: nn.Linear) -> torch.Tensor:
            # The grad is set: the loss was backpropagated above.
            return (linear.weight.detach() * typing.cast(torch.Tensor, linear.weight.grad)).abs().double()

        def rows(part, count: int) -> torch.Tensor:
            return saliency(part.linear)[part.offset : part.offset + count]

        q = rows(layer.q, num_heads * head_dim).reshape(num_heads, -1).sum(1)
        kv_groups = (
            (rows(layer.k, layout.num_kv_heads * head_dim) + rows(layer.v, layout.num_kv_heads * head_dim))
            .reshape(layout.num_kv_heads, -1)
            .sum(1)
        )
        o = saliency(layer.o).reshape(-1, num_heads, head_dim).sum((0, 2))
        heads[index] += (q + o + kv_groups.repeat_interleave(group) / group).cpu()
        size = layout.intermediate_size
        neuron = rows(layer.gate, size).sum(1) + rows(layer.up, size).sum(1) + saliency(layer.down).sum(0)
        neurons[index] += neuron.cpu()
    model.zero_grad(set_to_none=True)

"""Run many token sequences through the decoder and keep the hidden states at a few positions.

The prefix every sequence shares (the chat template's system turn, typically) runs once and its
key/value cache is reused, as scoring does; causal attention makes the states after it identical.
``states="hidden"`` keeps ``output_hidden_states`` (each layer's output, the last one after the final
norm, as transformers reports it); ``"residual"`` keeps the raw decoder-layer outputs, the residual
stream the direction interventions act on.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..architectures import ModelLayout
from ..devices import input_device
from ..kv_cache import cache_argument, common_prefix, returned_cache

STATES = ("hidden", "residual")
# Called before each forward pass with the batch's [batch, positions] indices relative to the inputs fed
# (None before the shared-prefix pass).
BatchHook = Callable[[torch.Tensor | None], None]


def backbone_of(model: nn.Module, layout: ModelLayout) -> nn.Module:
    """The decoder stack without the logits layer (the probe never needs logits)."""
    return model.get_submodule(layout.layers_path.rsplit(".layers", 1)[0])


@contextmanager
def _residual_outputs(layout_layers: nn.ModuleList, positions: list[torch.Tensor | None], kept: list):
    def hook(_module, _args, output):
        hidden = output if torch.is_tensor(output) else output[0]
        kept.append(_gather(hidden, positions[0]))

    handles = [layer.register_forward_hook(hook) for layer in layout_layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _gather(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [batch, seq, dim], positions [batch, p] -> [batch, p, dim] in float32 on the CPU."""
    index = positions.to(hidden.device)[:, :, None].expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index).float().cpu()


def collect_states(
    model: nn.Module,
    layout: ModelLayout,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pad_id: int,
    share_prefix: bool = True,
    states: str = "hidden",
    on_batch: BatchHook | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """[sequences, layers, positions, hidden] states at ``positions`` (absolute, same count per sequence)."""
    if states not in STATES:
        raise ValueError(f"states must be one of {', '.join(STATES)}, got {states!r}")
    if not sequences or len(sequences) != len(positions):
        raise ValueError("need one list of positions per sequence, and at least one sequence")
    counts = {len(p) for p in positions}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every sequence needs the same, non-zero number of positions")
    for sequence, wanted in zip(sequences, positions):
        if min(wanted) < 0 or max(wanted) >= len(sequence):
            raise ValueError("a position lies outside its sequence")
    device = input_device(model)
    backbone = backbone_of(model, layout)
    layers = typing.cast(nn.ModuleList, model.get_submodule(layout.layers_path))
    prefix = min(common_prefix(sequences), min(min(p) for p in positions)) if share_prefix else 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    result = torch.empty(len(sequences), layout.num_layers, len(positions[0]), layout.hidden_size)
    kept: list[torch.Tensor] = []
    current: list[torch.Tensor | None] = [None]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    with torch.inference_mode(), _residual_outputs(layers, current, kept) if states == "residual" else _nothing():
        prefix_cache = None
        if prefix:
            prefix_ids = torch.tensor([list(sequences[0][:prefix])], device=device)
            current[0] = torch.zeros(1, 1, dtype=torch.long)
            if on_batch:
                on_batch(None)  # the prefix pass: no probed position lies in it
            prefix_cache = returned_cache(backbone(input_ids=prefix_ids, use_cache=True))
            kept.clear()
        for done, rows in enumerate(batches, start=1):
            width = max(len(sequences[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, i in enumerate(rows):
                input_ids[row, : len(sequences[i])] = torch.tensor(list(sequences[i]))
                attention_mask[row, : len(sequences[i])] = 1
            current[0] = torch.tensor([list(positions[i]) for i in rows]) - prefix
            if on_batch:
                on_batch(current[0])
            kwargs = dict(attention_mask=attention_mask.to(device), output_hidden_states=states == "hidden")
            if prefix_cache is None:
                output = backbone(input_ids=input_ids.to(device), use_cache=False, **kwargs)
            else:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
                output = backbone(
                    input_ids=input_ids[:, prefix:].to(device),
                    use_cache=True,
                    **{cache_argument(backbone): cache},
                    **kwargs,
                )
            if states == "hidden":
                per_layer = [
                    _gather(hidden, typing.cast(torch.Tensor, current[0])) for hidden in output.hidden_states[1:]
                ]
            else:
                per_layer, kept[:] = list(kept), []
            result[rows] = torch.stack(per_layer, 1)
            if progress:
                progress(done, len(batches))
    return result


@contextmanager
def _nothing():
    yield

"""How much each unit writes along the refusal direction of its layer (what no ablation shows).

A neuron writes ``x_j * W_down[:, j]`` and a head ``W_o[:, channels] @ x_channels``, with x the unit's
mean input at the last prompt position of harmful calibration prompts. Two scores per unit:
``cosine`` (the issue's: cos(write weights, direction) x mean activation; for a head, cos of its mean
write x the norm of its mean input) and ``write``, the mean write's projection on the unit direction,
which adds up over units, so a class's share of the layer's total write is meaningful.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..architectures import ModelLayout
from ..classes import CLASSES
from ..controls import matched_random
from ..devices import real_weights
from ..unitmap import UnitMap
from ..units import UnitSpace

HISTOGRAM_BINS = 24


@contextmanager
def record_projection_inputs(layout: ModelLayout):
    """Yield ``(on_batch, means)``: sums of o_proj and down_proj inputs at the probed positions.

    Pass ``on_batch`` to ``collect_states``; ``means()`` returns ([layers, heads*head_dim], [layers, neurons]).
    """
    heads = torch.zeros(layout.num_layers, layout.layers[0].o.in_features, dtype=torch.float64)
    neurons = torch.zeros(layout.num_layers, layout.intermediate_size, dtype=torch.float64)
    count = [0]
    where: list[torch.Tensor | None] = [None]

    def on_batch(positions: torch.Tensor | None) -> None:
        where[0] = positions  # None during the shared-prefix pass: nothing there is probed

    def hook_for(target: torch.Tensor, index: int):
        def hook(_module, args):
            inputs = args[0].detach()
            if where[0] is None:
                return
            picked = inputs.gather(1, where[0].to(inputs.device)[:, :, None].expand(-1, -1, inputs.shape[-1]))
            target[index] += picked.double().sum((0, 1)).cpu()
            if target is heads and index == 0:
                count[0] += picked.shape[0] * picked.shape[1]

        return hook

    handles = []
    for projections in layout.layers:
        handles.append(projections.o.register_forward_pre_hook(hook_for(heads, projections.index)))
        handles.append(projections.down.register_forward_pre_hook(hook_for(neurons, projections.index)))

    def means() -> tuple[torch.Tensor, torch.Tensor]:
        if count[0] == 0:
            raise ValueError("no projection inputs were recorded")
        return heads / count[0], neurons / count[0]

    try:
        yield on_batch, means
    finally:
        for handle in handles:
            handle.remove()


def unit_write_scores(
    layout: ModelLayout, directions: torch.Tensor, head_means: torch.Tensor, neuron_means: torch.Tensor
) -> dict[str, torch.Tensor]:
    """{"cosine", "write"}: [units] float64 in the flat unit order, against each unit's own layer direction."""
    space = UnitSpace.from_layout(layout)
    head_cos = torch.zeros(space.num_layers, space.num_heads, dtype=torch.float64)
    head_write = torch.zeros_like(head_cos)
    neuron_cos = torch.zeros(space.num_layers, space.intermediate_size, dtype=torch.float64)
    neuron_write = torch.zeros_like(neuron_cos)
    for projections in layout.layers:
        layer = projections.index
        unit = directions[layer].double()
        unit = unit / unit.norm().clamp_min(1e-12)
        with real_weights(projections.down):  # an offloaded layer's weights, loaded for the read
            down = projections.down.weight.detach().double().cpu()  # [hidden, neurons]
        x = neuron_means[layer].double()
        neuron_cos[layer] = F.cosine_similarity(down, unit[:, None], dim=0) * x
        neuron_write[layer] = (unit @ down) * x
        with real_weights(projections.o):
            o = projections.o.weight.detach().double().cpu()
        o = o.reshape(space.hidden_size, space.num_heads, space.head_dim)
        xh = head_means[layer].double().reshape(space.num_heads, space.head_dim)
        writes = torch.einsum("dhc,hc->hd", o, xh)  # each head's mean write [heads, hidden]
        head_write[layer] = writes @ unit
        head_cos[layer] = F.cosine_similarity(writes, unit[None, :], dim=1) * xh.norm(dim=1)
    return {"cosine": space.join(head_cos, neuron_cos), "write": space.join(head_write, neuron_write)}


def _stats(mask: torch.Tensor, scores: dict[str, torch.Tensor], edges: torch.Tensor) -> dict:
    cosine, write = scores["cosine"][mask], scores["write"][mask]
    total, total_abs = float(scores["write"].sum()), float(scores["write"].abs().sum())
    if int(mask.sum()) == 0:
        return {"units": 0, "histogram": [0] * (len(edges) - 1)}
    return {
        "units": int(mask.sum()),
        "cosine_mean": float(cosine.mean()),
        "cosine_median": float(cosine.median()),
        "write_mean": float(write.mean()),
        "write_share": float(write.sum()) / total if total else 0.0,
        "abs_write_share": float(write.abs().sum()) / total_abs if total_abs else 0.0,
        "histogram": torch.histogram(cosine.clamp(edges[0], edges[-1]), bins=edges).hist.long().tolist(),
    }


def summarize_unit_writes(scores: dict[str, torch.Tensor], unit_map: UnitMap | None, *, seed: int = 0) -> dict:
    """Per class (and its matched random control) the score distribution and its share of the total write."""
    cosine = scores["cosine"]
    low, high = torch.quantile(cosine, 0.005).item(), torch.quantile(cosine, 0.995).item()
    if low == high:
        low, high = low - 1.0, high + 1.0
    edges = torch.linspace(low, high, HISTOGRAM_BINS + 1, dtype=torch.float64)
    summary: dict = {
        "edges": [float(e) for e in edges],
        "all": _stats(torch.ones_like(cosine, dtype=torch.bool), scores, edges),
    }
    if unit_map is None:
        return summary
    if unit_map.labels.shape[0] != cosine.shape[0]:
        raise ValueError("the unit map was made for a model of another shape")
    summary["classes"], summary["random"] = {}, {}
    for offset, name in enumerate(CLASSES):
        mask = unit_map.mask(name)
        summary["classes"][name] = _stats(mask, scores, edges)
        if 0 < int(mask.sum()) and int((~mask).sum()) >= int(mask.sum()):
            try:
                control = matched_random(unit_map, name, seed + offset)
            except ValueError:
                continue
            summary["random"][name] = _stats(control, scores, edges)
    return summary

"""The paper's reasoning-direction probe (§6.1, Fig. 2-4): how far a continuation moves the query's state.

For every harmful query, layer and k: the cosine distance between the hidden state of the query alone
(its last token) and that of the query followed by k refusal tokens, and by k compliance tokens (the
last token, or the mean over the k appended tokens with ``pool="mean"``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import ModelLayout
from .forward import collect_states
from .inputs import ProbeInput

KINDS = ("refusal", "compliance")


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) over the last dimension, in float64."""
    return 1.0 - F.cosine_similarity(a.double(), b.double(), dim=-1)


def probe_distances(
    model: nn.Module,
    layout: ModelLayout,
    inputs: list[ProbeInput],
    config,
    *,
    pad_id: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """{kind: {k: [queries, layers] distances}} for kind in refusal, compliance."""
    if not inputs:
        raise ValueError("no probe inputs: every query was too long or its continuation too short")
    need = max(config.ks)
    sequences, positions = [], []
    for item in inputs:
        span = list(range(item.query_length - 1, item.query_length + need))
        for sequence in (item.refusal, item.compliance):
            sequences.append(sequence)
            positions.append(span)
    states = collect_states(
        model,
        layout,
        sequences,
        positions,
        batch_size=config.batch_size,
        pad_id=pad_id,
        share_prefix=config.share_prefix,
        states="hidden",
        progress=progress,
    )  # [2 * queries, layers, need + 1, hidden]
    states = states.reshape(len(inputs), 2, layout.num_layers, need + 1, layout.hidden_size)
    result: dict[str, dict[int, torch.Tensor]] = {}
    for index, kind in enumerate(KINDS):
        chosen = states[:, index]
        query = chosen[:, :, 0]
        result[kind] = {}
        for k in config.ks:
            continuation = chosen[:, :, k] if config.pool == "last" else chosen[:, :, 1 : k + 1].mean(2)
            result[kind][k] = cosine_distance(query, continuation)
    return result


def summarize_distances(distances: dict[str, dict[int, torch.Tensor]]) -> dict:
    """Mean (and std) over queries per layer and k, and the gap |d_refusal - d_compliance| per layer."""
    summary: dict = {kind: {} for kind in (*KINDS, "gap")}
    summary.update({f"{kind}_std": {} for kind in KINDS})
    for k in distances["refusal"]:
        means = {}
        for kind in KINDS:
            values = distances[kind][k]
            means[kind] = values.mean(0)
            summary[kind][str(k)] = [round(float(v), 6) for v in means[kind]]
            std = values.std(0) if values.shape[0] > 1 else torch.zeros_like(means[kind])
            summary[f"{kind}_std"][str(k)] = [round(float(v), 6) for v in std]
        summary["gap"][str(k)] = [round(float(v), 6) for v in (means["refusal"] - means["compliance"]).abs()]
    return summary

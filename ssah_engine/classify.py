"""Label units SCU / UCU / CU / RU from their safety and utility z-scores (global, parameter-weighted)."""

from __future__ import annotations

import torch

from .classes import LABEL, Cuts


def select_by_weight(order: torch.Tensor, weights: torch.Tensor, fraction: float) -> torch.Tensor:
    """The leading units of ``order`` whose summed weight stays within ``fraction`` of all weight."""
    budget = fraction * weights.sum()
    cumulative = weights[order].cumsum(0)
    return order[cumulative <= budget + 1e-9 * budget]


def classify(z_safety: torch.Tensor | None, z_utility: torch.Tensor, weights: torch.Tensor, cuts: Cuts) -> torch.Tensor:
    """Return int8 labels (codes of CLASSES) applied in the order RU, SCU, UCU; the rest is CU.

    With ``z_safety`` None only redundant units are found, from utility alone (a pre-trained
    model's "alignment budget"); SCU and UCU are then left empty.
    """
    labels = torch.full(z_utility.shape, LABEL["CU"], dtype=torch.int8)
    if z_safety is None:
        labels[select_by_weight(torch.argsort(z_utility, stable=True), weights, cuts.ru)] = LABEL["RU"]
        return labels
    total = z_safety + z_utility
    diff = z_safety - z_utility
    labels[select_by_weight(torch.argsort(total, stable=True), weights, cuts.ru)] = LABEL["RU"]
    labels[select_by_weight(torch.argsort(diff, descending=True, stable=True), weights, cuts.scu)] = LABEL["SCU"]
    labels[select_by_weight(torch.argsort(diff, stable=True), weights, cuts.ucu)] = LABEL["UCU"]
    return labels

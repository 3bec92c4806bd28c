"""Role transfer: how unit labels moved between two unit maps of the same architecture."""

from __future__ import annotations

import torch

from .classes import CLASSES, LABEL
from .unitmap import UnitMap


def role_transfer(before: UnitMap, after: UnitMap) -> dict:
    """Cross-tab ``counts[i][j]``: units labelled CLASSES[i] before and CLASSES[j] after.

    Also given per row as fractions of the "before" class, and split by heads and neurons.
    """
    if before.space != after.space:
        raise ValueError("role transfer needs two unit maps of the same architecture and shape")
    space = before.space

    def table(old: torch.Tensor, new: torch.Tensor) -> list[list[int]]:
        return [[int(((old == LABEL[a]) & (new == LABEL[b])).sum()) for b in CLASSES] for a in CLASSES]

    counts = table(before.labels, after.labels)
    old_heads, old_neurons = space.split(before.labels)
    new_heads, new_neurons = space.split(after.labels)
    return {
        "classes": list(CLASSES),
        "counts": counts,
        "row_fractions": [[cell / max(sum(row), 1) for cell in row] for row in counts],
        "heads": table(old_heads, new_heads),
        "neurons": table(old_neurons, new_neurons),
        "before": {name: int((before.labels == LABEL[name]).sum()) / space.size for name in CLASSES},
        "after": {name: int((after.labels == LABEL[name]).sum()) / space.size for name in CLASSES},
        "unchanged_fraction": float((before.labels == after.labels).double().mean()),
    }

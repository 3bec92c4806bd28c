"""Matched random controls: would any units of the same budget do what a class does?

A control for a class draws, uniformly and with a seed, as many heads and as many neurons as the
class holds from the units outside it. Heads and neurons each have one parameter weight, so the
control also removes exactly the class's parameter budget.
"""

from __future__ import annotations

import torch

from .unitmap import UnitMap


def matched_random(unit_map: UnitMap, classes, seed: int) -> torch.Tensor:
    """Bool [units] mask of random units with the same head and neuron counts as ``classes``, outside them."""
    target = unit_map.mask(classes)
    space = unit_map.space
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.zeros(space.size, dtype=torch.bool)
    for start, stop in ((0, space.total_heads), (space.total_heads, space.size)):
        inside = target[start:stop]
        pool = (~inside).nonzero().flatten()
        count = int(inside.sum())
        if count > len(pool):
            raise ValueError(f"cannot draw {count} control units from the {len(pool)} outside {classes}")
        picked = pool[torch.randperm(len(pool), generator=generator)[:count]]
        chosen[start + picked] = True
    return chosen

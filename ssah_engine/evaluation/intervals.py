"""Uncertainty of the rates an evaluation reports.

A rate over n prompts gets a Wilson score interval (well behaved at 0 % and 100 %, where the normal
approximation collapses to a point). The difference of two evaluations on the same prompts gets a
paired bootstrap interval: prompts are resampled together, so the shared prompt difficulty cancels.
"""

from __future__ import annotations

import math
import random
import typing
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(successes: int, total: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / total`` (95 % by default); None when ``total`` is 0."""
    if total <= 0:
        return None
    if not 0 <= successes <= total:
        raise ValueError(f"successes must lie in [0, {total}], got {successes}")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_interval(values: Sequence[bool]) -> dict | None:
    """``{"rate", "k", "n", "ci95"}`` of a list of outcomes; None when it is empty."""
    if not values:
        return None
    k, n = sum(bool(v) for v in values), len(values)
    low, high = typing.cast(tuple[float, float], wilson(k, n))  # n > 0, so never None
    return {"rate": k / n, "k": k, "n": n, "ci95": [round(low, 6), round(high, 6)]}


def paired_bootstrap(before: Sequence[bool], after: Sequence[bool], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``after - before`` over paired outcomes, with a percentile 95 % bootstrap interval."""
    if len(before) != len(after):
        raise ValueError(f"paired outcomes need equal lengths, got {len(before)} and {len(after)}")
    if not before:
        raise ValueError("paired_bootstrap needs at least one pair")
    differences = [float(b) - float(a) for a, b in zip(before, after)]
    n = len(differences)
    rng = random.Random(seed)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low = means[int(0.025 * (resamples - 1))]
    high = means[int(math.ceil(0.975 * (resamples - 1)))]
    return {"difference": sum(differences) / n, "n": n, "ci95": [low, high], "resamples": resamples, "seed": seed}

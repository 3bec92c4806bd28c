"""Label units SCU / UCU / CU / RU from their safety and utility z-scores (global, parameter-weighted)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Label codes stored in unit maps. Order is the display order.
CLASSES = ("SCU", "UCU", "CU", "RU")
LABEL = {name: code for code, name in enumerate(CLASSES)}
# The paper's v1 names: exclusive safety / utility units.
ALIASES = {"ESU": "SCU", "EUU": "UCU"}


def canonical_class(name: str) -> str:
    """'esu' -> 'SCU'; raises ValueError naming the accepted spellings."""
    upper = name.strip().upper()
    upper = ALIASES.get(upper, upper)
    if upper not in LABEL:
        raise ValueError(f"unknown unit class {name!r}; use one of SCU/ESU, UCU/EUU, CU, RU")
    return upper


@dataclass(frozen=True)
class Cuts:
    """Fractions of all unit parameters given to each cut (the paper: 0.10 / 0.01 / 0.10)."""

    ru: float = field(default=0.10, metadata={"help": "redundant units: lowest z_S + z_U"})
    scu: float = field(default=0.01, metadata={"help": "safety-critical units: highest z_S - z_U"})
    ucu: float = field(default=0.10, metadata={"help": "utility-critical units: lowest z_S - z_U"})

    def __post_init__(self):
        for name in ("ru", "scu", "ucu"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"cut {name.upper()} must be a fraction in [0, 1), got {value}")

    @classmethod
    def parse(cls, text: str) -> "Cuts":
        """Parse ``"RU,SCU,UCU"`` fractions, e.g. ``"0.1,0.01,0.1"``."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"cuts must be three fractions RU,SCU,UCU, got {text!r}")
        try:
            ru, scu, ucu = (float(part) for part in parts)
        except ValueError:
            raise ValueError(f"cuts must be numbers, got {text!r}") from None
        return cls(ru=ru, scu=scu, ucu=ucu)


def select_by_weight(order: torch.Tensor, weights: torch.Tensor, fraction: float) -> torch.Tensor:
    """The leading units of ``order`` whose summed weight stays within ``fraction`` of all weight."""
    budget = fraction * weights.sum()
    cumulative = weights[order].cumsum(0)
    return order[cumulative <= budget + 1e-9 * budget]


def classify(
    z_safety: torch.Tensor | None, z_utility: torch.Tensor, weights: torch.Tensor, cuts: Cuts
) -> torch.Tensor:
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

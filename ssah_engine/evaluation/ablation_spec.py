"""Which units an evaluation removes: classes of a unit map, or a matched random control of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..classes import canonical_class
from ..controls import matched_random
from ..unitmap import UnitMap

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class AblationSpec:
    """Remove ``classes`` (SCU/ESU, UCU/EUU, CU, RU), or with ``control="random"`` as many random units outside them."""

    classes: tuple[str, ...]
    control: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        classes = tuple(
            canonical_class(name) for name in ([self.classes] if isinstance(self.classes, str) else self.classes)
        )
        if not classes:
            raise ValueError("an ablation needs at least one class")
        object.__setattr__(self, "classes", tuple(dict.fromkeys(classes)))
        if self.control not in (None, "random"):
            raise ValueError(f"control must be None or 'random', got {self.control!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @classmethod
    def parse(cls, entries: Sequence[str], seed: int = 0) -> "AblationSpec":
        """From CLI/API names: ``["SCU", "RU"]`` or ``["random:SCU"]`` (a control cannot mix with plain classes)."""
        randoms = [entry.startswith(RANDOM_PREFIX) for entry in entries]
        if any(randoms) and not all(randoms):
            raise ValueError(f"a random control cannot be mixed with plain classes: {list(entries)}")
        names = tuple(entry.removeprefix(RANDOM_PREFIX) for entry in entries)
        return cls(names, control="random" if any(randoms) else None, seed=seed)

    @property
    def label(self) -> str:
        names = "+".join(self.classes)
        return f"random matched to {names} (seed {self.seed})" if self.control else names

    def units(self, unit_map: UnitMap) -> torch.Tensor:
        """The bool [units] mask this spec removes from ``unit_map``'s model."""
        if self.control == "random":
            return matched_random(unit_map, list(self.classes), self.seed)
        return unit_map.mask(list(self.classes))

    def describe(self, unit_map: UnitMap, units: torch.Tensor) -> dict:
        """The spec with what it removed: counts and the parameter share, for the result."""
        heads, neurons = unit_map.space.split(units)
        weights = unit_map.space.param_weights()
        return asdict(self) | {
            "classes": list(self.classes),
            "label": self.label,
            "units": int(units.sum()),
            "heads": int(heads.sum()),
            "neurons": int(neurons.sum()),
            "param_fraction": float(weights[units].sum() / weights.sum()),
        }

    def to_dict(self) -> dict:
        return asdict(self) | {"classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> "AblationSpec":
        unknown = sorted(set(data) - {"classes", "control", "seed"})
        if unknown:
            raise ValueError(f"unknown ablation settings: {', '.join(unknown)}")
        return cls(tuple(data.get("classes") or ()), data.get("control"), data.get("seed", 0))

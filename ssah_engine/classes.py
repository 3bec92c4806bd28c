"""The unit classes (SCU, UCU, CU, RU, with the paper's ESU/EUU spellings) and the cuts that size them.

Kept apart from ``classify`` (which needs torch) so configs and command lines can name classes and
cuts without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    ru: float = field(default=0.10, metadata={"help": "redundant units: lowest z_S + z_U", "ge": 0.0, "lt": 1.0})
    scu: float = field(
        default=0.01, metadata={"help": "safety-critical units: highest z_S - z_U", "ge": 0.0, "lt": 1.0}
    )
    ucu: float = field(
        default=0.10, metadata={"help": "utility-critical units: lowest z_S - z_U", "ge": 0.0, "lt": 1.0}
    )

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

    @staticmethod
    def format(cuts: "Cuts") -> str:
        """The text ``parse`` reads back."""
        return f"{cuts.ru:g},{cuts.scu:g},{cuts.ucu:g}"

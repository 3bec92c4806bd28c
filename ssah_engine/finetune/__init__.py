"""Masked fine-tuning: freeze the safety-critical units, or train only the redundant ones.

``run_finetune`` runs a whole job; ``build_masks`` and ``FrozenSlices`` are the pieces that keep
frozen rows and columns bit-identical under AdamW (weight decay and momentum included).
"""

from .config import FinetuneConfig, parse_layer_range
from .masks import FREEZE_RULES, ParamMasks, SliceMask, build_masks
from .optimizer import FrozenSlices, make_optimizer, make_scheduler
from .run import FinetuneResult, run_finetune
from .selection import find_redundant_units, frozen_units_for, top_cu_by_safety
from .tracking import RefusalTracker

__all__ = [
    "FREEZE_RULES",
    "FinetuneConfig",
    "FinetuneResult",
    "FrozenSlices",
    "ParamMasks",
    "RefusalTracker",
    "SliceMask",
    "build_masks",
    "find_redundant_units",
    "frozen_units_for",
    "make_optimizer",
    "make_scheduler",
    "parse_layer_range",
    "run_finetune",
    "top_cu_by_safety",
]

"""`ssah reproduce`: the paper's arc on one model — baseline, alignment, audit, ablation, downstream fine-tuning.

``plan`` holds the settings and presets, ``steps`` one function per stage (engine calls only),
``run`` strings them together with timing and resumption, ``report`` writes results.json/.md.
"""

from .plan import Plan
from .run import STAGES, reproduce

__all__ = ["STAGES", "Plan", "reproduce"]

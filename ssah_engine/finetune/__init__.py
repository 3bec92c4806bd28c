"""Masked fine-tuning: freeze the safety-critical units, or train only the redundant ones.

``run_finetune`` runs a whole job; ``build_masks`` and ``FrozenSlices`` are the pieces that keep
frozen rows and columns bit-identical under AdamW (weight decay and momentum included), and
``PackedAdamW`` keeps optimizer state only for the trainable rows and columns.
Names load on first use, so ``FinetuneConfig`` (command-line flags, API schemas) comes without torch.
"""

from ..lazy_exports import lazy_getattr

_EXPORTS = {
    "FREEZE_RULES": ".config",
    "FinetuneConfig": ".config",
    "parse_layer_range": ".config",
    "ParamMasks": ".masks",
    "SliceMask": ".masks",
    "build_masks": ".masks",
    "FrozenSlices": ".optimizer",
    "make_optimizer": ".optimizer",
    "make_scheduler": ".optimizer",
    "Packing": ".packed",
    "PackedAdamW": ".packed",
    "FinetuneResult": ".run",
    "run_finetune": ".run",
    "find_redundant_units": ".selection",
    "frozen_units_for": ".selection",
    "top_cu_by_safety": ".selection",
    "RefusalTracker": ".tracking",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)

"""Which schedule a run trains under: equal epochs for every arm, or the paper's.

The paper trained its freeze settings (i) and (ii) for twice the epochs of plain fine-tuning,
and ran one epoch of setting (ii) before setting (i). With ``paper_schedule`` a freeze arm
trains twice the run's epochs (or max_steps); setting (i) spends the first epoch of those
under setting (ii)'s masks, then switches. Setting (i) freezes a subset of what (ii) freezes
(SCU + the top of CU against SCU + all CU, under either freeze rule), so (i)'s frozen elements
stay bit-identical through both phases. Full mode is the plain arm and trains the epochs given.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..units import UnitSpace
from .batches import StepBatches
from .config import FinetuneConfig
from .masks import ParamMasks

WARMUP_SETTING = "ii"


def paper_phases(
    config: FinetuneConfig,
    data: StepBatches,
    masks: ParamMasks,
    masks_of_setting: Callable[[str], ParamMasks],
    model: nn.Module,
    space: UnitSpace,
) -> tuple[list[tuple[int, ParamMasks]], dict]:
    """The (first step, masks) phases of the run and the record of its schedule."""
    phases = [(0, masks)]
    if config.paper_schedule and config.setting == "i":
        switch = min(data.steps_per_epoch, data.total_steps)
        phases = [(0, masks_of_setting(WARMUP_SETTING)), (switch, masks)]
    settings = [WARMUP_SETTING, config.setting] if len(phases) == 2 else [config.setting]
    described = []
    for number, ((first, part), setting) in enumerate(zip(phases, settings)):
        last = phases[number + 1][0] if number + 1 < len(phases) else data.total_steps
        summary = part.summary(model, space)
        described.append(
            {
                "setting": setting,
                "first_step": first + 1,
                "last_step": last,
                "trainable_parameters": summary["trainable_parameters"],
            }
        )
    return phases, {
        "name": "paper" if config.paper_schedule else "equal",
        "arm": "plain" if config.mode == "full" else config.setting or config.mode,
        "length_factor": config.length_factor,
        "steps": data.total_steps,
        "steps_per_epoch": data.steps_per_epoch,
        "phases": described,
    }

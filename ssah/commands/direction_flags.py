"""`ssah eval --direction DIR --ablate-direction | --add-direction ALPHA`: evaluate under a direction intervention."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from .common import CommandError


@contextmanager
def direction_intervention(model, args):
    """Yield a description of the intervention in force (None without one)."""
    ablate, alpha = getattr(args, "ablate_direction", False), getattr(args, "add_direction", None)
    if args.direction is None:
        if ablate or alpha is not None:
            raise CommandError("--ablate-direction and --add-direction need --direction")
        with nullcontext():
            yield None
        return
    if ablate == (alpha is not None):
        raise CommandError("--direction needs exactly one of --ablate-direction and --add-direction ALPHA")
    from ssah_engine.probe import RefusalDirection, ablate_direction, add_direction

    direction = RefusalDirection.load(args.direction)
    if direction.directions.shape[1] != model.config.get_text_config().hidden_size:
        raise CommandError(f"the direction in {args.direction} was made for a model of another width")
    described = {"direction": str(args.direction), "layer": direction.layer}
    if ablate:
        with ablate_direction(model, direction.unit):
            yield described | {"kind": "ablate"}
    else:
        with add_direction(model, direction.vector, direction.layer, alpha):
            yield described | {"kind": "add", "alpha": alpha}

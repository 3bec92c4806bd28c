"""The reasoning-direction probe (the paper's §6.1) and the refusal direction (Arditi et al.).

Names load on first use, so ``ProbeConfig`` (command-line flags, API schemas) comes without torch.
"""

import importlib

_EXPORTS = {
    "ProbeConfig": ".config",
    "RefusalDirection": ".direction",
    "fit_direction": ".direction",
    "probe_distances": ".distances",
    "ablate_direction": ".interventions",
    "add_direction": ".interventions",
    "orthogonalize_weights": ".interventions",
    "ProbeReport": ".run",
    "compare_probes": ".run",
    "run_probe": ".run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)

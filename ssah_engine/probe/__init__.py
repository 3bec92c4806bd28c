"""The reasoning-direction probe (the paper's §6.1) and the refusal direction (Arditi et al.).

Names load on first use, so ``ProbeConfig`` (command-line flags, API schemas) comes without torch.
"""

from ..lazy_exports import lazy_getattr

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)

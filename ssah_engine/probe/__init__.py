"""The reasoning-direction probe (the paper's §6.1) and the refusal direction (Arditi et al.)."""

from .config import ProbeConfig
from .direction import RefusalDirection, fit_direction
from .distances import probe_distances
from .interventions import ablate_direction, add_direction, orthogonalize_weights
from .run import ProbeReport, compare_probes, run_probe

__all__ = [
    "ProbeConfig",
    "ProbeReport",
    "RefusalDirection",
    "ablate_direction",
    "add_direction",
    "compare_probes",
    "fit_direction",
    "orthogonalize_weights",
    "probe_distances",
    "run_probe",
]

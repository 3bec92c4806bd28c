"""The refusal direction (Arditi et al., NeurIPS 2024): per layer, mean harmful minus mean harmless state.

States are the raw residual stream (each decoder layer's output) at the last prompt position of
calibration prompts, never the evaluation prompts. The direction of each layer comes from the first
part of each set; the held-out rest says how well it separates harmful from harmless prompts, and the
best-separating layer among the first ``max_layer_fraction`` of the model is the chosen one (late
layers mostly encode the next token, not the decision).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TENSORS_FILE = "direction.safetensors"
META_FILE = "direction.json"


@dataclass
class RefusalDirection:
    """Directions of every layer ([layers, hidden], unnormalised) and which one is used."""

    directions: torch.Tensor
    layer: int
    separation: list[float] = field(default_factory=list)  # held-out standardised gap per layer
    accuracy: list[float] = field(default_factory=list)  # held-out balanced accuracy per layer
    counts: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def vector(self) -> torch.Tensor:
        """The chosen layer's mean difference (what ``add_direction`` adds ``alpha`` times)."""
        return self.directions[self.layer]

    @property
    def unit(self) -> torch.Tensor:
        """The chosen direction, unit norm (what ``ablate_direction`` projects out)."""
        return self.vector / self.vector.norm()

    def summary(self) -> dict:
        return {
            "layer": self.layer,
            "norms": [round(float(n), 6) for n in self.directions.norm(dim=1)],
            "separation": [round(v, 6) for v in self.separation],
            "accuracy": [round(v, 6) for v in self.accuracy],
            "counts": self.counts,
            **self.meta,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"directions": self.directions.float().contiguous()}, str(directory / TENSORS_FILE))
        (directory / META_FILE).write_text(json.dumps(self.summary(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> RefusalDirection:
        """Load from a directory holding direction.safetensors (a probe's output, or its model subfolder)."""
        path = Path(path)
        directory = path.parent if path.is_file() else path
        if not (directory / TENSORS_FILE).exists():
            raise FileNotFoundError(f"no {TENSORS_FILE} in {directory}")
        meta = json.loads((directory / META_FILE).read_text())
        known = {"layer", "separation", "accuracy", "counts", "norms"}
        return cls(
            directions=load_file(str(directory / TENSORS_FILE))["directions"],
            layer=int(meta["layer"]),
            separation=list(meta.get("separation", [])),
            accuracy=list(meta.get("accuracy", [])),
            counts=dict(meta.get("counts", {})),
            meta={key: value for key, value in meta.items() if key not in known},
        )


def split_counts(count: int, holdout: float) -> tuple[int, int]:
    """(train, held out) sizes; both at least one."""
    held = min(max(1, round(count * holdout)), count - 1)
    return count - held, held


def fit_direction(
    harmful: torch.Tensor, harmless: torch.Tensor, *, holdout: float, max_layer_fraction: float
) -> RefusalDirection:
    """Directions from [prompts, layers, hidden] last-position states of each set, layer picked on held-out ones."""
    if harmful.shape[0] < 2 or harmless.shape[0] < 2:
        raise ValueError("the direction needs at least two harmful and two harmless calibration prompts")
    train_h, held_h = split_counts(harmful.shape[0], holdout)
    train_b, held_b = split_counts(harmless.shape[0], holdout)
    harmful, harmless = harmful.double(), harmless.double()
    mean_h = harmful[:train_h].mean(0)
    mean_b = harmless[:train_b].mean(0)
    directions = mean_h - mean_b  # [layers, hidden]
    layers = directions.shape[0]
    separation, accuracy = [], []
    for layer in range(layers):
        unit = directions[layer] / directions[layer].norm().clamp_min(1e-12)
        middle = (mean_h[layer] + mean_b[layer]) / 2
        p_h = (harmful[train_h:, layer] - middle) @ unit
        p_b = (harmless[train_b:, layer] - middle) @ unit
        spread = math.sqrt((float(p_h.var(unbiased=False)) + float(p_b.var(unbiased=False))) / 2)
        gap = float(p_h.mean() - p_b.mean())
        separation.append(gap / spread if spread > 0 else (math.inf if gap > 0 else 0.0))
        accuracy.append((float((p_h > 0).double().mean()) + float((p_b < 0).double().mean())) / 2)
    allowed = max(1, math.floor(layers * max_layer_fraction))
    chosen = max(range(allowed), key=lambda layer: separation[layer])
    counts = {
        "harmful_train": train_h,
        "harmful_heldout": held_h,
        "harmless_train": train_b,
        "harmless_heldout": held_b,
    }
    finite = [v if math.isfinite(v) else 1e9 for v in separation]
    return RefusalDirection(directions.float(), chosen, finite, accuracy, counts)

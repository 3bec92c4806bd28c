"""The unit map: every unit's label and scores, saved as safetensors + summary.json.

Layout of an artifact directory::

    unit_map.safetensors   labels, z_safety, z_utility per unit (flat order), input means
    summary.json           class table, per-layer counts, config, model, data hashes, versions
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .classes import CLASSES, LABEL, canonical_class
from .units import UnitSpace

TENSORS_FILE = "unit_map.safetensors"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    import transformers

    from . import __version__

    return {
        "ssah_engine": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


@dataclass
class UnitMap:
    space: UnitSpace
    labels: torch.Tensor  # [units] int8 codes of CLASSES
    z_safety: torch.Tensor | None  # [units] float64; None for a utility-only (budget) map
    z_utility: torch.Tensor  # [units] float64
    head_input_mean: torch.Tensor  # [layers, heads * head_dim], safety calibration pass
    neuron_input_mean: torch.Tensor  # [layers, neurons], safety calibration pass
    layers_path: str = "model.layers"
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    versions: dict = field(default_factory=library_versions)
    # The same means on the utility pass (None in maps written before they were kept): ablation may be
    # compensated with either pass or both pooled.
    utility_head_input_mean: torch.Tensor | None = None
    utility_neuron_input_mean: torch.Tensor | None = None

    def mask(self, classes) -> torch.Tensor:
        """Boolean [units] mask of the units in ``classes`` (names; ESU/EUU accepted)."""
        if isinstance(classes, str):
            classes = [classes]
        codes = torch.tensor([LABEL[canonical_class(name)] for name in classes], dtype=torch.int8)
        return torch.isin(self.labels, codes)

    def summary(self) -> dict:
        weights = self.space.param_weights()
        total_weight = weights.sum().item()
        head_labels, neuron_labels = self.space.split(self.labels)
        classes = {}
        for name in CLASSES:
            selected = self.labels == LABEL[name]
            classes[name] = {
                "units": int(selected.sum()),
                "heads": int((head_labels == LABEL[name]).sum()),
                "neurons": int((neuron_labels == LABEL[name]).sum()),
                "unit_fraction": float(selected.sum()) / self.space.size,
                "param_fraction": float(weights[selected].sum()) / total_weight,
            }
        layers = [
            {
                "layer": layer,
                "heads": {name: int((head_labels[layer] == LABEL[name]).sum()) for name in CLASSES},
                "neurons": {name: int((neuron_labels[layer] == LABEL[name]).sum()) for name in CLASSES},
            }
            for layer in range(self.space.num_layers)
        ]
        return {
            "format_version": FORMAT_VERSION,
            "classes": classes,
            "layers": layers,
            "units": {"total": self.space.size, "heads": self.space.total_heads, "neurons": self.space.total_neurons},
            "space": self.space.to_dict(),
            "layers_path": self.layers_path,
            "config": self.config,
            "model": self.model,
            "data": self.data,
            "versions": self.versions,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "labels": self.labels.contiguous(),
            "z_utility": self.z_utility.contiguous(),
            "head_input_mean": self.head_input_mean.contiguous(),
            "neuron_input_mean": self.neuron_input_mean.contiguous(),
        }
        if self.z_safety is not None:
            tensors["z_safety"] = self.z_safety.contiguous()
        if self.utility_head_input_mean is not None and self.utility_neuron_input_mean is not None:
            tensors["utility_head_input_mean"] = self.utility_head_input_mean.contiguous()
            tensors["utility_neuron_input_mean"] = self.utility_neuron_input_mean.contiguous()
        save_file(tensors, str(directory / TENSORS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        (directory / SUMMARY_FILE).write_text(json.dumps(self.summary(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "UnitMap":
        directory = Path(directory)
        summary_path, tensors_path = directory / SUMMARY_FILE, directory / TENSORS_FILE
        for path in (summary_path, tensors_path):
            if not path.is_file():
                raise FileNotFoundError(f"{directory} is not a unit map: {path.name} is missing")
        summary = json.loads(summary_path.read_text())
        tensors = load_file(str(tensors_path))
        return cls(
            space=UnitSpace(**summary["space"]),
            labels=tensors["labels"],
            z_safety=tensors.get("z_safety"),
            z_utility=tensors["z_utility"],
            head_input_mean=tensors["head_input_mean"],
            neuron_input_mean=tensors["neuron_input_mean"],
            layers_path=summary["layers_path"],
            config=summary["config"],
            model=summary["model"],
            data=summary["data"],
            versions=summary["versions"],
            utility_head_input_mean=tensors.get("utility_head_input_mean"),
            utility_neuron_input_mean=tensors.get("utility_neuron_input_mean"),
        )

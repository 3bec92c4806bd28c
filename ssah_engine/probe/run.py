"""Probe a model: the paper's distance curves, the refusal direction and the units' writes along it.

``run_probe`` is the one function the CLI and the worker call. Data: ``harmful`` gives the probed
queries (with their refusals as the refusal continuation) and the harmful calibration prompts,
``harmless`` the harmless ones; both are calibration sets (builtin:safety, builtin:utility), never
the evaluation prompts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..architectures import describe
from ..data import Dataset
from ..loading import LoadedModel
from ..unitmap import UnitMap, library_versions
from .config import ProbeConfig
from .direction import RefusalDirection, fit_direction
from .distances import probe_distances, summarize_distances
from .forward import collect_states
from .inputs import build_inputs, prompt_ids
from .unit_writes import (
    record_projection_inputs,
    summarize_unit_writes,
    unit_write_scores,
)

logger = logging.getLogger(__name__)

REPORT_FILE = "probe.json"
UNIT_WRITES_FILE = "unit_writes.safetensors"
ProgressFn = Callable[[str, float], None]


@dataclass
class ProbeReport:
    """What one probe of one model found; ``data`` is JSON (stored in the database and the report)."""

    data: dict
    direction: RefusalDirection
    unit_scores: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.direction.save(directory)
        if self.unit_scores:
            save_file({k: v.contiguous() for k, v in self.unit_scores.items()}, str(directory / UNIT_WRITES_FILE))
        (directory / REPORT_FILE).write_text(json.dumps(self.data, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ProbeReport:
        directory = Path(directory)
        scores = load_file(str(directory / UNIT_WRITES_FILE)) if (directory / UNIT_WRITES_FILE).exists() else {}
        return cls(json.loads((directory / REPORT_FILE).read_text()), RefusalDirection.load(directory), scores)


def _last_positions(sequences: list[list[int]]) -> list[list[int]]:
    return [[len(sequence) - 1] for sequence in sequences]


def _calibration_ids(tokenizer, dataset: Dataset, config: ProbeConfig) -> list[list[int]]:
    ids = [prompt_ids(tokenizer, example.prompt, config) for example in dataset.take(config.calibration).examples]
    ids = [sequence for sequence in ids if len(sequence) <= config.max_length]
    if len(ids) < 2:
        raise ValueError(f"the set {dataset.name} has fewer than two calibration prompts within max_length")
    return ids


def run_probe(
    loaded: LoadedModel,
    harmful: Dataset,
    harmless: Dataset,
    config: ProbeConfig = ProbeConfig(),
    *,
    unit_map: UnitMap | None = None,
    progress: ProgressFn | None = None,
) -> ProbeReport:
    """Probe ``loaded.model``: distances per layer and k, the refusal direction, unit writes along it."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def stage(name: str, start: float, width: float):
        return (lambda done, total: progress(name, start + width * done / total)) if progress else None

    started = time.perf_counter()
    queries = [(example.prompt, example.response) for example in harmful.take(config.queries).examples]
    inputs = build_inputs(tokenizer, queries, config)
    logger.info("probing %d harmful queries, k in %s", len(inputs), list(config.ks))
    distances = probe_distances(model, layout, inputs, config, pad_id=pad_id, progress=stage("probe", 0.0, 0.5))
    probe_seconds = time.perf_counter() - started

    started = time.perf_counter()
    harmful_ids = _calibration_ids(tokenizer, harmful, config)
    harmless_ids = _calibration_ids(tokenizer, harmless, config)
    common = dict(batch_size=config.batch_size, pad_id=pad_id, share_prefix=config.share_prefix, states="residual")
    with record_projection_inputs(layout) as (on_batch, means):
        harmful_states = collect_states(
            model,
            layout,
            harmful_ids,
            _last_positions(harmful_ids),
            on_batch=on_batch,
            progress=stage("direction: harmful prompts", 0.5, 0.25),
            **common,
        )
        head_means, neuron_means = means()
    harmless_states = collect_states(
        model,
        layout,
        harmless_ids,
        _last_positions(harmless_ids),
        progress=stage("direction: harmless prompts", 0.75, 0.25),
        **common,
    )
    direction = fit_direction(
        harmful_states[:, :, 0],
        harmless_states[:, :, 0],
        holdout=config.holdout,
        max_layer_fraction=config.max_layer_fraction,
    )
    direction.meta = {"harmful": harmful.name, "harmless": harmless.name}
    scores = unit_write_scores(layout, direction.directions, head_means, neuron_means)
    direction_seconds = time.perf_counter() - started

    data = {
        "config": config.to_dict(),
        "model": {
            "source": loaded.source,
            "resolved": loaded.resolved,
            "family": layout.family,
            "layers": layout.num_layers,
            "hidden_size": layout.hidden_size,
        },
        "data": {
            "harmful": {"name": harmful.name, "sha256": harmful.sha256},
            "harmless": {"name": harmless.name, "sha256": harmless.sha256},
        },
        "queries": len(inputs),
        "distances": summarize_distances(distances),
        "direction": direction.summary(),
        "unit_writes": summarize_unit_writes(scores, unit_map, seed=config.random_seed),
        "seconds": {"probe": round(probe_seconds, 3), "direction": round(direction_seconds, 3)},
        "versions": library_versions(),
    }
    if unit_map is not None:
        data["unit_map"] = {"model": unit_map.model, "config": unit_map.config}
    if progress:
        progress("done", 1.0)
    return ProbeReport(data, direction, scores)


def compare_probes(aligned: dict, other: dict) -> dict:
    """Per k and layer, aligned minus other for both distances (the paper's Fig. 4 reading)."""
    if aligned["model"]["layers"] != other["model"]["layers"]:
        return {"comparable": False, "reason": "the models have different numbers of layers"}
    result: dict = {"comparable": True}
    for kind in ("refusal", "compliance"):
        result[kind] = {
            k: [round(a - b, 6) for a, b in zip(values, other["distances"][kind][k])]
            for k, values in aligned["distances"][kind].items()
            if k in other["distances"][kind]
        }
    return result

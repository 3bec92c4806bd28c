"""Which units a run freezes: from a unit map's classes, a setting of the paper, or the RU budget."""

from __future__ import annotations

import logging

import torch

from ..architectures import describe
from ..classify import LABEL, Cuts, classify
from ..data import Dataset
from ..encoding import encode_pairs, make_batches
from ..loading import LoadedModel
from ..scoring import score_dataset
from ..unitmap import UnitMap
from ..units import UnitSpace
from .config import SETTINGS, FinetuneConfig

logger = logging.getLogger(__name__)


def top_cu_by_safety(unit_map: UnitMap, fraction: float, of: str = "model") -> torch.Tensor:
    """Bool [units]: the CU units with the highest z_S, up to ``fraction`` of the parameters.

    ``of='model'``: a fraction of all unit parameters (SCU 1 % + CU 6 % gives the paper's ~7.5 %);
    ``of='cu'``: a fraction of CU's own parameters.
    """
    if unit_map.z_safety is None:
        raise ValueError("setting (i) ranks CU by safety score, but this unit map has none (utility-only map)")
    weights = unit_map.space.param_weights()
    cu = unit_map.labels == LABEL["CU"]
    budget = fraction * (weights.sum() if of == "model" else weights[cu].sum())
    cu_index = torch.nonzero(cu).squeeze(1)
    order = cu_index[torch.argsort(unit_map.z_safety[cu_index], descending=True, stable=True)]
    chosen = order[weights[order].cumsum(0) <= budget + 1e-9 * budget]
    selected = torch.zeros(unit_map.space.size, dtype=torch.bool)
    selected[chosen] = True
    return selected


def frozen_units_for(config: FinetuneConfig, space: UnitSpace, unit_map: UnitMap | None) -> torch.Tensor:
    """Bool [units] frozen by ``config`` (before whole-layer freezes); needs a unit map except in full mode."""
    if unit_map is not None and unit_map.space != space:
        raise ValueError(f"the unit map describes another architecture ({unit_map.space}) than the model ({space})")
    if config.mode == "full":
        return torch.zeros(space.size, dtype=torch.bool)
    if unit_map is None:
        raise ValueError(f"mode {config.mode!r} needs a unit map (or, in budget mode, a utility set)")
    if config.mode == "budget":
        return ~unit_map.mask("RU")
    if config.setting == "i":
        return unit_map.mask("SCU") | top_cu_by_safety(unit_map, config.cu_top, config.cu_top_of)
    classes = SETTINGS[config.setting] if config.setting else config.freeze_classes
    if not classes:
        raise ValueError("freeze mode needs a setting ('i' or 'ii'), a class list, or an explicit unit set")
    return unit_map.mask(list(classes))


def find_redundant_units(loaded: LoadedModel, utility: Dataset, config: FinetuneConfig, batch_size: int = 8) -> UnitMap:
    """Utility-only unit map of a pre-trained model: RU = lowest z_U up to ``config.budget`` of parameters."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    subset = utility.take(config.budget_samples)
    pairs = [(example.prompt, example.response) for example in subset.examples if example.response]
    encoded = encode_pairs(tokenizer, pairs, max_length=config.max_length, system_prompt=config.system_prompt)
    if not encoded:
        raise ValueError(f"the utility set {utility.name} has no pair that fits in max_length={config.max_length}")
    logger.info("finding redundant units on %d utility pairs (budget %.0f %%)", len(encoded), 100 * config.budget)
    was_training = model.training
    model.eval()
    scores = score_dataset(model, layout, make_batches(encoded, batch_size, tokenizer.pad_token_id), method="wifv")
    model.train(was_training)
    labels = classify(None, scores.scores, space.param_weights(), Cuts(ru=min(config.budget, 0.999), scu=0.0, ucu=0.0))
    return UnitMap(
        space=space,
        labels=labels,
        z_safety=None,
        z_utility=scores.scores,
        head_input_mean=scores.head_input_mean.float(),
        neuron_input_mean=scores.neuron_input_mean.float(),
        layers_path=layout.layers_path,
        config={
            "method": "wifv",
            "samples": config.budget_samples,
            "cuts": {"ru": config.budget, "scu": 0.0, "ucu": 0.0},
            "max_length": config.max_length,
            "batch_size": batch_size,
            "system_prompt": config.system_prompt,
        },
        model={"source": loaded.source, "resolved": loaded.resolved, "family": layout.family},
        data={
            "utility": {
                "name": utility.name,
                "sha256": subset.sha256,
                "pairs": len(encoded),
                "response_tokens": scores.tokens,
            }
        },
    )

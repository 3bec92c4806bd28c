"""Audit a model: score every unit on a safety and a utility set, then label it (settings: ``AuditConfig``).

``run_audit`` is the one function the CLI and the worker call; a reader can follow an audit
from here top to bottom.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable

from .architectures import describe
from .audit_config import AuditConfig
from .classify import classify
from .data import Dataset
from .encoding import encode_pairs, make_batches
from .loading import LoadedModel
from .scoring import score_dataset
from .self_responses import self_calibration
from .streaming import StreamedModel, stream_scores
from .unitmap import UnitMap
from .units import UnitSpace

logger = logging.getLogger(__name__)

# (stage, fraction of the whole audit done in [0, 1])
ProgressFn = Callable[[str, float], None]


def _calibration_subset(dataset: Dataset, config: AuditConfig) -> Dataset:
    """The pairs an audit scores: a seeded sample (the authors' draw) or the first N."""
    if config.sampling == "shuffle":
        return dataset.sample(config.samples, config.seed)
    return dataset.take(config.samples)


def run_audit(
    loaded: LoadedModel,
    safety: Dataset,
    utility: Dataset,
    config: AuditConfig = AuditConfig(),
    progress: ProgressFn | None = None,
) -> UnitMap:
    """Score ``loaded.model`` on both sets and return its unit map."""
    if config.stream_layers != isinstance(loaded, StreamedModel):
        raise ValueError(
            "stream_layers audits a model skeleton from streaming.load_streamed, and only that"
            if config.stream_layers
            else "a skeleton from streaming.load_streamed needs stream_layers=True"
        )
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    data_used: dict = {}
    scores = {}
    safety, utility = _calibration_subset(safety, config), _calibration_subset(utility, config)
    self_report = None
    if config.responses == "self":  # the same sampled prompts, answered in the model's own words
        calibration = self_calibration(
            loaded,
            safety,
            utility,
            system_prompt=config.system_prompt,
            max_new_tokens=config.self_response_tokens,
            batch_size=config.batch_size,
        )
        safety, utility, self_report = calibration.safety, calibration.utility, calibration.report
    batch_sets = {}
    for name, subset in (("safety", safety), ("utility", utility)):
        pairs = [(example.prompt, example.response) for example in subset.examples if example.response]
        if not pairs:
            raise ValueError(f"the {name} set {subset.name} has no (prompt, response) pairs")
        encoded = encode_pairs(
            tokenizer,
            pairs,
            max_length=config.max_length,
            system_prompt=config.system_prompt,
            response_tokens=config.response_tokens,
        )
        if not encoded:
            raise ValueError(f"every prompt of the {name} set is longer than max_length={config.max_length}")
        # flap's running update depends on the order: the sampled order, as the authors fed it
        batch_sets[name] = list(
            make_batches(encoded, config.batch_size, tokenizer.pad_token_id, sort=config.estimator != "flap")
        )
        data_used[name] = {
            "name": subset.name,
            "sha256": subset.sha256,
            "sampling": config.sampling,
            "seed": config.seed if config.sampling == "shuffle" else None,
            "pairs": len(encoded),
        }

    if config.stream_layers:
        logger.info("scoring both sets layer by layer from %s (%s)", loaded.resolved, config.method)

        def report_layer(done: int, total: int) -> None:
            if progress:
                progress("scoring layer by layer", done / total)

        scores = stream_scores(
            typing.cast(StreamedModel, loaded),
            layout,
            batch_sets,
            method=config.method,
            estimator=config.estimator,
            progress=report_layer,
        )
    for stage, name in enumerate(() if config.stream_layers else ("safety", "utility")):
        logger.info("scoring %d %s pairs (%s)", data_used[name]["pairs"], name, config.method)

        def report(done: int, total: int, stage=stage, name=name) -> None:
            if progress:
                progress(f"scoring {name} set", (stage + done / total) / 2)

        scores[name] = score_dataset(
            model, layout, batch_sets[name], method=config.method, estimator=config.estimator, progress=report
        )
    for name in batch_sets:
        data_used[name]["response_tokens"] = scores[name].tokens

    if self_report is not None:
        data_used["self_responses"] = self_report
    labels = classify(scores["safety"].scores, scores["utility"].scores, space.param_weights(), config.cuts)
    unit_map = UnitMap(
        space=space,
        labels=labels,
        z_safety=scores["safety"].scores,
        z_utility=scores["utility"].scores,
        head_input_mean=scores["safety"].head_input_mean.float(),
        neuron_input_mean=scores["safety"].neuron_input_mean.float(),
        utility_head_input_mean=scores["utility"].head_input_mean.float(),
        utility_neuron_input_mean=scores["utility"].neuron_input_mean.float(),
        layers_path=layout.layers_path,
        config=config.to_dict(),
        model={
            "source": loaded.source,
            "resolved": loaded.resolved,
            "family": layout.family,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        },
        data=data_used,
    )
    if progress:
        progress("classified", 1.0)
    return unit_map

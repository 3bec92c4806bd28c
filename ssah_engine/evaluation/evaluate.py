"""`evaluate`: every safety and utility number of one model under one protocol, as a JSON-ready dict."""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from ..ablation import ablate
from ..data import Dataset, load_dataset
from ..loading import LoadedModel
from ..losses import response_nll
from ..unitmap import UnitMap, library_versions
from .ablation_spec import AblationSpec
from .judge import load_judge
from .perplexity import perplexity
from .prompts import describe_template
from .protocol import SETTINGS_ADDED_LATER, DataRef, Protocol
from .safety import run_prompt_set, summarize
from .zero_shot import zero_shot

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def load_pinned(protocol: Protocol) -> tuple[Protocol, dict[str, Dataset]]:
    """Load every dataset of ``protocol``; return the protocol with their content hashes filled in.

    A dataset whose content no longer matches a hash the protocol already pins is refused.
    """
    datasets, refs = {}, {}
    for name, ref in protocol.datasets().items():
        dataset = load_dataset(ref.source, limit=ref.limit, require_response=name == "instructions")
        if ref.sha256 and ref.sha256 != dataset.sha256:
            raise ValueError(
                f"{name} set {ref.source!r} has content hash {dataset.sha256}, the protocol pins {ref.sha256}"
            )
        datasets[name] = dataset
        refs[name] = DataRef(ref.source, ref.limit, dataset.sha256)
    return protocol.replace(**refs), datasets


class _Tracker:
    """Turns per-stage item counts into one (stage, overall fraction) progress stream."""

    def __init__(self, callback: Progress | None, total: float):
        self.callback, self.total, self.done = callback, max(total, 1.0), 0.0

    def weighted(self, weight: float):
        def tick(stage: str, count: int) -> None:
            self.done += weight * count
            if self.callback:
                self.callback(stage, min(self.done / self.total, 1.0))

        return tick


def evaluate(
    loaded: LoadedModel,
    protocol: Protocol | None = None,
    progress: Progress | None = None,
    *,
    ablation: AblationSpec | None = None,
    unit_map: UnitMap | None = None,
    judge_api_key: str | None = None,
    reuse_utility: dict | None = None,
    zero_shot_include_path: str | None = None,
) -> dict:
    """Evaluate ``loaded`` under ``protocol`` (default: Protocol()); the result is evaluation.json's content.

    With ``ablation`` (and the ``unit_map`` it refers to) the units are removed for the evaluation, with the
    protocol's compensation, and the result records what was removed; the weights are restored afterwards.
    Otherwise the model is used as it is, so a mask applied around this call is measured.
    ``judge_api_key``: the key of an endpoint judge, read by the caller from ``protocol.judge.api_key_env``.

    ``reuse_utility``, an earlier result for the same weights, skips the utility pass (perplexity, response
    loss, zero-shot) and copies its numbers: they depend neither on the prompt format nor on the conditions,
    so a run that measures one model in several formats computes them once. Its utility settings and its
    ablation must equal this call's (checked; that the weights are the same is the caller's promise).
    ``zero_shot_include_path``: a folder of lm-eval task YAMLs (local tasks, local data; see ``zero_shot``).
    """
    if (ablation is None) != (unit_map is None):
        raise ValueError("an ablation and its unit map go together")
    protocol, data = load_pinned(protocol or Protocol())
    judge = protocol.judge
    if judge is not None and judge.api_key_env and not judge_api_key:  # before an hour of generation, not after
        raise ValueError(f"the judge endpoint {judge.base_url} needs its key: set the variable {judge.api_key_env}")
    if ablation is None:
        _check_reusable(reuse_utility, protocol, None)
        return _evaluate(loaded, protocol, data, progress, judge_api_key, reuse_utility, zero_shot_include_path)
    assert unit_map is not None  # checked above: an ablation comes with its unit map
    units = ablation.units(unit_map)
    described = ablation.describe(unit_map, units) | {"compensation": protocol.ablation_compensation}
    _check_reusable(reuse_utility, protocol, described)
    with ablate(loaded.model, unit_map, units, compensation=protocol.ablation_compensation):
        result = _evaluate(loaded, protocol, data, progress, judge_api_key, reuse_utility, zero_shot_include_path)
    result["ablation"] = described
    return result


# The protocol settings utility numbers depend on (the prompt format and the conditions do not enter them).
UTILITY_SETTINGS = (
    "benign_text",
    "instructions",
    "perplexity_max_length",
    "perplexity_stride",
    "response_max_length",
    "zero_shot_tasks",
    "zero_shot_limit",
    "zero_shot_num_fewshot",
    "batch_size",
)


def _check_reusable(previous: dict | None, protocol: Protocol, ablation: dict | None) -> None:
    if previous is None:
        return
    settings, earlier = protocol.to_dict(), SETTINGS_ADDED_LATER | previous["protocol"]["settings"]
    differing = [name for name in UTILITY_SETTINGS if settings[name] != earlier[name]]
    if differing:
        raise ValueError(f"cannot reuse utility numbers measured under other settings: {', '.join(differing)}")
    if previous.get("ablation") != ablation:
        raise ValueError("cannot reuse utility numbers of an evaluation with other units ablated")


def _evaluate(
    loaded: LoadedModel,
    protocol: Protocol,
    data: dict[str, Dataset],
    progress: Progress | None,
    judge_api_key: str | None = None,
    reuse_utility: dict | None = None,
    zero_shot_include_path: str | None = None,
) -> dict:
    model, tokenizer = loaded.model, loaded.tokenizer
    started, timing = time.perf_counter(), {}
    harmful = [example.prompt for example in data["harmful"].examples]
    harmless = [example.prompt for example in data["harmless"].examples]
    suffixes = [example.prompt for example in data["suffixes"].examples] if "suffixes" in data else []
    conditions = len(protocol.conditions) + max(len(suffixes) - 1, 0)
    generation_weight = max(protocol.max_new_tokens / 8, 1.0)  # one generated prompt vs one scored prompt
    tracker = _Tracker(progress, (len(harmful) + len(harmless)) * conditions * (1 + generation_weight) + 1)
    generation_tick, margin_tick = tracker.weighted(generation_weight), tracker.weighted(1.0)

    def tick(stage: str, count: int) -> None:
        (generation_tick if "generation" in stage else margin_tick)(stage, count)

    was_training = model.training
    model.eval()
    try:
        mark = time.perf_counter()
        harmful_records = run_prompt_set(
            model,
            tokenizer,
            harmful,
            protocol,
            set_name="harmful",
            suffixes=suffixes,
            progress=tick,
            examples=data["harmful"].examples,
        )
        harmless_records = run_prompt_set(
            model, tokenizer, harmless, protocol, set_name="harmless", progress=tick, examples=data["harmless"].examples
        )
        timing["safety_seconds"] = round(time.perf_counter() - mark, 2)
        safety = summarize(harmful_records, harmless_records, protocol)
        safety["template"] = describe_template(tokenizer)
        safety["judge"] = _judge(protocol, harmful_records, loaded, timing, judge_api_key)

        mark = time.perf_counter()
        if reuse_utility is None:
            utility = _utility(model, tokenizer, protocol, data, zero_shot_include_path)
        else:
            utility = reuse_utility["utility"] | {"reused_from_protocol": reuse_utility["protocol"]["hash"]}
        timing["utility_seconds"] = round(time.perf_counter() - mark, 2)
        if progress:
            progress("done", 1.0)
    finally:
        model.train(was_training)
    timing["total_seconds"] = round(time.perf_counter() - started, 2)
    return {
        "ablation": None,
        "protocol": {"hash": protocol.hash, "version": protocol.canonical()["version"], "settings": protocol.to_dict()},
        "model": {
            "source": loaded.source,
            "resolved": loaded.resolved,
            "device": str(loaded.device),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "parameters": sum(parameter.numel() for parameter in model.parameters()),
        },
        "safety": safety,
        "utility": utility,
        "records": {"harmful": harmful_records, "harmless": harmless_records},
        "timing": timing,
        "environment": library_versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _judge(
    protocol: Protocol, records: list[dict], loaded: LoadedModel, timing: dict, api_key: str | None
) -> dict | None:
    """Judge verdicts on the harmful responses, stored on each record and summarised with the judge's identity.

    ASR is over the verdicts that parsed (``unparsed`` counts the others); ``score_mean`` is the mean score
    (P(unsafe), P(yes) or the StrongREJECT score, which is that benchmark's headline number)."""
    if protocol.judge is None:
        return None
    mark = time.perf_counter()
    judge = load_judge(protocol.judge, loaded.device, api_key=api_key)
    verdicts = judge.verdicts([r["prompt"] for r in records], [r["response"] for r in records], protocol.batch_size)
    for record, verdict in zip(records, verdicts):
        record["judge"] = verdict

    def mean(values: list) -> float | None:
        return sum(values) / len(values) if values else None

    asr_by_condition, score_by_condition, unparsed = {}, {}, {}
    for condition in protocol.conditions:
        judged = [v for r, v in zip(records, verdicts) if r["condition"] == condition]
        asr_by_condition[condition] = mean([v["unsafe"] for v in judged if v["unsafe"] is not None])
        score_by_condition[condition] = mean([v["score"] for v in judged if v.get("score") is not None])
        unparsed[condition] = sum(v["unsafe"] is None for v in judged)
    timing["judge_seconds"] = round(time.perf_counter() - mark, 2)
    rates = [rate for rate in asr_by_condition.values() if rate is not None]
    scores = [score for score in score_by_condition.values() if score is not None]
    return {
        "identity": judge.identity | (judge.client.usage() if judge.client is not None else {}),
        "asr": mean(rates),
        "asr_by_condition": asr_by_condition,
        "score_mean": mean(scores),
        "score_by_condition": score_by_condition,
        "unparsed": unparsed,
    }


def _utility(
    model, tokenizer, protocol: Protocol, data: dict[str, Dataset], zero_shot_include_path: str | None = None
) -> dict:
    texts = [example.prompt for example in data["benign_text"].examples]
    measured = perplexity(
        model,
        tokenizer,
        texts,
        max_length=protocol.perplexity_max_length,
        stride=protocol.perplexity_stride,
        batch_size=protocol.batch_size,
    )
    utility: dict[str, Any] = {
        "perplexity": measured.perplexity,
        "perplexity_nll": measured.nll,
        "perplexity_tokens": measured.tokens,
        "response_nll": None,
    }
    if "instructions" in data:
        # Loaded with require_response: every example has a response.
        pairs = [(example.prompt, typing.cast(str, example.response)) for example in data["instructions"].examples]
        utility["response_nll"] = response_nll(
            model, tokenizer, pairs, batch_size=protocol.batch_size, max_length=protocol.response_max_length
        )
    with torch.inference_mode(False):
        utility["zero_shot"] = zero_shot(
            model,
            tokenizer,
            protocol.zero_shot_tasks,
            limit=protocol.zero_shot_limit,
            batch_size=protocol.batch_size,
            num_fewshot=protocol.zero_shot_num_fewshot,
            include_path=zero_shot_include_path,
        )
    return utility

"""lm-eval zero-shot tasks on the in-memory model (ablated or masked models included).

lm-eval is optional: without it the result says so plainly instead of failing the evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# Per-sample strings (contexts, continuations, generations) are cut to this many characters: the samples say
# what was scored and how, the task's data holds the full text.
SAMPLE_TEXT_CHARS = 300
# What a per-sample line keeps of lm-eval's: the document's hashes, not the document.
SAMPLE_KEYS = ("doc_id", "target", "arguments", "filtered_resps", "filter", "doc_hash", "prompt_hash", "target_hash")


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: str | None, include_defaults: bool = True):
    """lm-eval's task index, built once per process. With the defaults it parses every task YAML lm-eval
    ships (minutes on a small CPU); ``include_defaults=False`` reads ``include_path`` only (instant)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _tasks_index(tasks: Sequence[str], include_path: str | None):
    """The local index when every task is defined under ``include_path``, else the full one."""
    if include_path is not None:
        local = _task_manager(include_path, include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    return _task_manager(include_path)


def _json_safe(value, chars: int = SAMPLE_TEXT_CHARS):
    """``value`` as plain JSON (tuples as lists, non-finite floats as None, long strings cut, others as text)."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + "…"
    if isinstance(value, dict):
        return {str(key): _json_safe(item, chars) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, chars) for item in value]
    if hasattr(value, "item"):  # a numpy or torch scalar
        return _json_safe(value.item(), chars)
    return _json_safe(str(value), chars)


def _sample(sample: dict) -> dict:
    """One lm-eval sample, trimmed: ids, hashes, what was scored, the model's responses and the metric values."""
    kept = {key: _json_safe(sample[key]) for key in SAMPLE_KEYS if key in sample}
    kept["metrics"] = {name: _json_safe(sample.get(name)) for name in sample.get("metrics", [])}
    return kept


def _config_sha256(config: dict) -> str:
    """sha256 of the task config lm-eval ran (prompts, dataset, metrics; local paths included)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def zero_shot(
    model,
    tokenizer,
    tasks: Sequence[str],
    *,
    limit: int | None,
    batch_size: int,
    num_fewshot: int = 0,
    include_path: str | None = None,
    log_samples: bool = True,
) -> dict:
    """``{"status": "ok", "tasks": {task: {metric: value}}, "task_info": ..., "samples": ...}``, or a status of
    ``skipped``/``unavailable``.

    ``task_info`` holds each task's lm-eval version, n-shot, sample counts (original and effective, i.e. after
    ``limit``) and the sha256 of its config; ``samples`` (with ``log_samples``) lm-eval's per-sample results,
    trimmed to JSON (``_sample``). ``include_path`` is a folder of lm-eval task YAMLs (local tasks, e.g. on a
    machine offline); when it defines every task asked for, lm-eval's own task index is not built.
    """
    if not tasks:
        return {"status": "skipped", "reason": "the protocol names no zero-shot task"}
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        logger.warning("zero-shot tasks skipped: lm-eval is not installed")
        return {"status": "unavailable", "reason": f"lm-eval is not installed ({error}); pip install lm-eval"}
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=_tasks_index(tasks, include_path),
            log_samples=log_samples,
        )
    except (ConnectionError, FileNotFoundError) as error:  # task data not on this machine, and no network
        logger.warning("zero-shot tasks skipped: %s", error)
        return {"status": "unavailable", "reason": f"zero-shot task data could not be loaded ({error})"}
    results = {
        task: {metric: _json_safe(value) for metric, value in metrics.items() if isinstance(value, (int, float))}
        for task, metrics in output["results"].items()
    }
    configs = output.get("configs", {})
    task_info = {
        task: {
            "version": _json_safe(output.get("versions", {}).get(task)),
            "num_fewshot": _json_safe(output.get("n-shot", {}).get(task)),
            "n_samples": _json_safe(output.get("n-samples", {}).get(task)),
            "config_sha256": _config_sha256(configs[task]) if task in configs else None,
        }
        for task in results
    }
    result = {
        "status": "ok",
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "num_fewshot": num_fewshot,
        "limit": limit,
        "tasks": results,
        "task_info": task_info,
    }
    if log_samples:
        result["samples"] = {task: [_sample(s) for s in samples] for task, samples in output.get("samples", {}).items()}
    return result

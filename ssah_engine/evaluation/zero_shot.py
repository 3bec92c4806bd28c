"""lm-eval zero-shot tasks on the in-memory model (ablated or masked models included).

lm-eval is optional: without it the result says so plainly instead of failing the evaluation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: str | None):
    """lm-eval's task index, built once per process: it parses every task YAML (a minute on a small CPU)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def zero_shot(
    model, tokenizer, tasks: Sequence[str], *, limit: int | None, batch_size: int, include_path: str | None = None
) -> dict:
    """``{"status": "ok", "tasks": {task: {metric: value}}}``, or a status of ``skipped``/``unavailable``.

    ``include_path`` is a folder of lm-eval task YAMLs (local tasks, e.g. for a machine offline).
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
            model=lm, tasks=list(tasks), num_fewshot=0, limit=limit, task_manager=_task_manager(include_path)
        )
    except (ConnectionError, FileNotFoundError) as error:  # task data not on this machine, and no network
        logger.warning("zero-shot tasks skipped: %s", error)
        return {"status": "unavailable", "reason": f"zero-shot task data could not be loaded ({error})"}
    results = {
        task: {metric: value for metric, value in metrics.items() if isinstance(value, (int, float))}
        for task, metrics in output["results"].items()
    }
    return {"status": "ok", "lm_eval_version": getattr(lm_eval, "__version__", None), "tasks": results}

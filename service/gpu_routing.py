"""Queues by GPU memory class: a job goes to the smallest class of GPU that holds its model, never a smaller one.

The deployment names its classes (``SSAH_GPU_CLASSES=24g,80g,141g``, decimal GB). A GPU job's memory
need is estimated before it is sent, without torch: from a size registered on the model (label
``parameters``, e.g. ``70e9``) or the ``config.json`` of a local model directory (the worker's own
estimate, ``estimate_parameters``), times the bytes per parameter its kind needs. It goes to queue
``gpu-<class>`` of the smallest class with room; a model of unknown size goes to the largest class.
A worker consumes the queue of its GPU's class and of every smaller class (``worker_queues``), so a
70B job never reaches a 24 GB card while a big card still helps with small jobs.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"  # the one GPU queue when no classes are configured
SIZE_LABEL = "parameters"  # a model's registered size, e.g. labels {"parameters": "70e9"}
# Bytes per parameter a job needs on the GPU: bf16 weights, plus activations and cache (x 1.25); a
# fine-tune keeps fp32 weights, gradients and two AdamW moments (16 B).
BYTES_PER_PARAMETER = {"finetune": 16.0}
DEFAULT_BYTES_PER_PARAMETER = 2.0
HEADROOM = 1.25
_CLASS = re.compile(r"^(\d+)g$")


@dataclass(frozen=True, order=True)
class GpuClass:
    gigabytes: int

    @property
    def bytes(self) -> int:
        return self.gigabytes * 10**9

    @property
    def queue(self) -> str:
        return f"{GPU_QUEUE}-{self.gigabytes}g"

    @classmethod
    def parse(cls, text: str) -> GpuClass:
        match = _CLASS.match(text.strip().lower())
        if not match or int(match.group(1)) == 0:
            raise ValueError(f"a GPU class is its memory in decimal GB, e.g. 24g or 80g; got {text!r}")
        return cls(int(match.group(1)))


def gpu_classes(names: list[str]) -> list[GpuClass]:
    """The configured classes, smallest first."""
    return sorted({GpuClass.parse(name) for name in names})


def queue_for(kind_queue: str, need_bytes: float | None, classes: list[GpuClass]) -> str:
    """The queue of a job whose kind uses ``kind_queue``: ``gpu-<class>`` for GPU work when classes exist."""
    if kind_queue != GPU_QUEUE or not classes:
        return kind_queue
    if need_bytes is None:
        return classes[-1].queue  # unknown size: the largest class, never a small card
    for gpu in classes:
        if need_bytes <= gpu.bytes:
            return gpu.queue
    return classes[-1].queue  # bigger than any card: the largest (a device map or the size check decides)


def class_of_memory(total_bytes: int, classes: list[GpuClass]) -> GpuClass | None:
    """The largest class a GPU of ``total_bytes`` belongs to; None when it is smaller than every class."""
    fitting = [gpu for gpu in classes if gpu.bytes <= total_bytes]
    return fitting[-1] if fitting else None


def worker_queues(gpu: GpuClass | None, classes: list[GpuClass]) -> list[str]:
    """What a worker of class ``gpu`` consumes: the plain gpu queue and its class's and every smaller class's."""
    smaller = [item.queue for item in classes if gpu is not None and item <= gpu]
    return [GPU_QUEUE, *smaller]


def estimate_parameters(config: Any) -> int | None:
    """Parameters of a decoder-only LM from its config (attributes or a config.json dict); None when unknown.

    Errs high (a gated MLP is assumed), like the worker's refusal before loading."""
    if isinstance(config, dict):
        config = SimpleNamespace(**config.get("text_config", config))
    elif hasattr(config, "get_text_config"):
        config = config.get_text_config()

    def first(*names: str) -> int | None:
        for name in names:
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    hidden, layers, vocab = (
        first("hidden_size", "n_embd", "d_model"),
        first("num_hidden_layers", "n_layer", "num_layers"),
        first("vocab_size"),
    )
    if hidden is None or layers is None or vocab is None:
        return None
    heads = first("num_attention_heads", "n_head") or 1
    head_dim = first("head_dim") or max(hidden // heads, 1)
    kv_heads = first("num_key_value_heads", "num_kv_heads") or heads
    experts = first("num_local_experts", "num_experts", "n_routed_experts") or 1
    intermediate = (
        (first("moe_intermediate_size") if experts > 1 else None)
        or first("intermediate_size", "n_inner", "ffn_dim")
        or 4 * hidden
    )
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * intermediate * experts  # gate, up, down
    embeddings = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", True) else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden)


def model_parameters(source: str, labels: dict[str, Any]) -> int | None:
    """A registered model's size: its ``parameters`` label, else a local directory's config.json; None if unknown."""
    registered = labels.get(SIZE_LABEL)
    if registered is not None:
        try:
            return int(float(registered))
        except (TypeError, ValueError):
            log.warning("model label %s=%r is not a number; estimating from the config", SIZE_LABEL, registered)
    config = Path(source).expanduser() / "config.json"
    try:
        return estimate_parameters(json.loads(config.read_text())) if config.is_file() else None
    except (OSError, ValueError):
        return None


def memory_need(kind: str, parameters: int | None) -> float | None:
    """GPU bytes a job of ``kind`` on a model of ``parameters`` needs; None when the size is unknown."""
    if parameters is None:
        return None
    return parameters * BYTES_PER_PARAMETER.get(kind, DEFAULT_BYTES_PER_PARAMETER) * HEADROOM


def job_queue(session: Any, *, job_id: uuid.UUID, kind: str, kind_queue: str, classes: list[GpuClass]) -> str:
    """The queue job ``job_id`` goes to, from its model's size (``session`` reads the job and model rows)."""
    if kind_queue != GPU_QUEUE or not classes:
        return kind_queue
    from service.models import Job, ModelSource

    job = session.get(Job, job_id)
    model = session.get(ModelSource, job.model_id) if job is not None and job.model_id is not None else None
    parameters = model_parameters(model.source, model.labels or {}) if model is not None else None
    return queue_for(kind_queue, memory_need(kind, parameters), classes)

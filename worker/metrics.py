"""The workers' Prometheus metrics, in prometheus_client's default registry.

With ``PROMETHEUS_MULTIPROC_DIR`` set (read by prometheus_client when it is imported) every
process writes its values to files there and the API's ``/metrics`` adds them up
(``service/api/ops.py``); without it they are seen only where the worker runs in the API's own
process (``ssah serve``, embedded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

JOBS = Counter(
    "ssah_worker_jobs",
    "Job attempts ended, by kind and outcome (succeeded, failed, cancelled, superseded, skipped, transient_error).",
    ["kind", "outcome"],
)
DURATION = Histogram(
    "ssah_worker_job_duration_seconds",
    "Wall time of a job attempt from its claim to its end, by kind.",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)
ATTEMPTS = Counter("ssah_worker_job_attempts", "Job attempts started, by kind.", ["kind"])
RETRIES = Counter(
    "ssah_worker_job_retries",
    "Job attempts after the first (the previous worker died, or the task was retried), by kind.",
    ["kind"],
)
MODEL_LOAD = Histogram(
    "ssah_worker_model_load_seconds",
    "Time to load a model (cache misses only).",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
GPU_PEAK = Gauge(
    "ssah_worker_gpu_memory_peak_bytes",
    "Peak CUDA memory allocated during the last job attempt of the kind (the largest over processes).",
    ["kind"],
    multiprocess_mode="max",
)


@contextmanager
def timed_load() -> Iterator[None]:
    """Observe the time the block takes in ``ssah_worker_model_load_seconds`` (only when it succeeds)."""
    start = time.perf_counter()
    yield
    MODEL_LOAD.observe(time.perf_counter() - start)


@contextmanager
def gpu_peak(kind: str) -> Iterator[None]:
    """Record the block's peak CUDA memory in ``ssah_worker_gpu_memory_peak_bytes{kind}``; nothing without CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        if cuda:
            try:
                GPU_PEAK.labels(kind).set(torch.cuda.max_memory_allocated())
            except RuntimeError as exc:  # a broken CUDA context must not hide the job's own outcome
                log.warning("GPU memory peak not recorded: %s", exc)

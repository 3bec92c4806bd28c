"""Configuration shared by the API, the worker and the CLI, read from ``SSAH_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field maps to ``SSAH_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SSAH_", extra="ignore")

    database_url: str = "sqlite:///./ssah.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    artifact_dir: Path = Path("./runs/artifacts")
    max_upload_bytes: int = 50 * 1024 * 1024
    max_json_body_bytes: int = 1024 * 1024  # every /v1 request body except uploads (service/body_guard.py)
    max_dataset_rows: int = 200_000
    page_size_default: int = 50
    page_size_max: int = 200
    # Short TTL: a revoked key stops working within this many seconds in every process.
    api_key_cache_seconds: float = 5.0
    broker_timeout_seconds: float = 2.0
    db_pool_size: int = 10
    db_max_overflow: int = 20
    log_level: str = "INFO"
    # json: one object per line (timestamp, level, logger, message, request/job/tenant id); service/logs.py.
    log_format: Literal["text", "json"] = "text"
    metrics_cache_seconds: float = 15.0  # /metrics counts jobs at most this often (it needs no key)
    metrics_token: str | None = None  # set: /metrics answers only to "Authorization: Bearer <token>"
    # Worker side (worker/ reads these; the API ignores them).
    # fsspec URL of the artifact store (s3://bucket/prefix, memory://x); None: the local artifact_dir.
    artifact_url: str | None = None
    model_cache_size: int = 1  # loaded models kept per worker process (LRU by source and dtype)
    device: str | None = None  # None: cuda when present, else cpu
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on CPU
    # The hard limit stays below visibility_timeout: Redis redelivers unacked work only after it.
    task_soft_time_limit: int = 6 * 3600
    task_time_limit: int = 6 * 3600 + 300
    visibility_timeout: int = 8 * 3600
    progress_interval_seconds: float = 2.0  # at most one progress write per job this often
    heartbeat_seconds: float = 15.0  # a running job's updated_at is refreshed at least this often
    stale_seconds: float = 120.0  # a running job silent this long has lost its worker
    reconcile_interval_seconds: float = 30.0
    # How often a worker's reconciler applies the tenants' retention_days (service/retention.py); 0: never.
    retention_interval_seconds: float = 600.0
    # A job started this many times whose worker died each time fails instead of killing the next one; 0: no cap.
    max_job_attempts: int = 3
    requeue_after_seconds: float = 60.0  # a queued job the broker lost is re-sent after this
    # Largest model (estimated from its config, in the dtype it loads in) a worker loads; None: 80 % of RAM.
    max_model_bytes: int | None = None
    eval_sample_limit: int | None = None  # cap on prompts per evaluation set (smoke tests, laptops)
    # GPU memory classes, e.g. "24g,80g,141g" (decimal GB): GPU jobs go to queue gpu-<class>, the smallest
    # class that holds the model (service/gpu_routing.py); a worker takes its GPU's class and the smaller ones.
    # Empty: every GPU job on the one queue "gpu".
    gpu_classes: Annotated[list[str], NoDecode] = []
    # Model-source policy (service/model_policy.py), checked by the API and again by the worker.
    # Comma-separated. Unset: any hub organisation (production should list its own); empty: no hub models.
    allowed_hub_orgs: Annotated[list[str] | None, NoDecode] = None
    # Comma-separated absolute paths; local directories and GGUF files load only from under these.
    allowed_local_roots: Annotated[list[Path], NoDecode] = []
    allow_trust_remote_code: bool = False  # True lets hub models run their own Python in the workers
    # True accepts hub revisions refs/pr/N (anyone's pull request) and refs/convert/* (see model_policy.py).
    allow_hub_pr_revisions: bool = False
    # Judges on OpenAI-compatible endpoints (an evaluation's judge.base_url): the base URLs a request may name
    # (comma-separated; empty: none), and the environment variables a request may name as judge.api_key_env.
    # Both are allow-lists: a tenant must not point the workers at any host or read any of their variables.
    judge_endpoints: Annotated[list[str], NoDecode] = []
    judge_key_envs: Annotated[list[str], NoDecode] = []
    # Per-request and per-tenant limits (service/limits.py); each refusal names its setting.
    max_sequence_length: int = 2048  # audit/fine-tune max_length and evaluation max_new_tokens
    max_samples_per_request: int = 10_000  # audit samples, evaluation samples
    max_concurrent_jobs_per_tenant: int = 20  # queued + running; 0: no limit
    rate_limit_per_minute: int = 600  # requests per API key per minute (Redis); 0: off
    rate_limit_url: str | None = None  # Redis for the rate limiter; None: broker_url when it is redis://
    # Webhooks (service/webhooks.py). Hosts a callback_url may name, comma-separated: listed hosts may resolve
    # anywhere (even loopback or private ranges); "*" admits any other host whose addresses are all public.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = ["*"]
    webhook_timeout_seconds: float = 10.0  # per POST
    webhook_max_attempts: int = 8  # tries before a delivery is marked failed
    webhook_backoff_seconds: float = 10.0  # wait after the first failed try, doubled after each next one
    webhook_backoff_max_seconds: float = 3600.0
    webhook_poll_seconds: float = 1.0  # how often a worker's sender looks for due deliveries; 0: no sender

    @field_validator(
        "allowed_hub_orgs",
        "allowed_local_roots",
        "judge_endpoints",
        "judge_key_envs",
        "webhook_allowed_hosts",
        "gpu_classes",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()

"""Configuration shared by the API, the worker and the CLI, read from ``SSAH_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field maps to ``SSAH_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SSAH_", extra="ignore")

    database_url: str = "sqlite:///./ssah.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    artifact_dir: Path = Path("./runs/artifacts")
    max_upload_bytes: int = 50 * 1024 * 1024
    max_dataset_rows: int = 200_000
    page_size_default: int = 50
    page_size_max: int = 200
    # Short TTL: a revoked key stops working within this many seconds in every process.
    api_key_cache_seconds: float = 5.0
    broker_timeout_seconds: float = 2.0
    db_pool_size: int = 10
    db_max_overflow: int = 20
    log_level: str = "INFO"
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
    requeue_after_seconds: float = 60.0  # a queued job the broker lost is re-sent after this
    eval_sample_limit: int | None = None  # cap on prompts per evaluation set (smoke tests, laptops)


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()

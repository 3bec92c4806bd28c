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


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()

"""Service settings, read from ``VOS_*`` environment variables by the API and the workers alike."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOS_", env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("VOS_REDIS_URL", "REDIS_URL"))
    key_prefix: str = "vos:"  # every Redis key of the service (jobs, streams, broker) starts with it
    storage_url: str = "./vos-storage"  # fsspec URL of the folder holding uploads, frames and results

    max_upload_bytes: int = 500 * 1024 * 1024
    max_prompt_file_bytes: int = 20 * 1024 * 1024
    max_frames: int = 10_000
    max_duration_s: float = 600.0
    allowed_containers: frozenset[str] = frozenset({"mp4", "mov", "mkv", "webm", "avi", "m4v"})
    api_key: str | None = None  # when set, /v1 requires the X-API-Key header

    stream_maxlen: int = 1000  # frames kept per job in its Redis stream; older ones are read from storage
    retention_s: float = 24 * 3600.0  # finished jobs are deleted this long after they end
    lease_s: float = 30.0  # a running job whose worker stopped renewing its lease for this long may be re-run
    visibility_timeout_s: float = 600.0  # an unacknowledged task is redelivered after this long
    restore_interval_s: int = 10  # how often workers look for tasks of lost workers
    task_soft_time_limit_s: float = 3600.0
    task_time_limit_s: float = 3700.0
    gpu_engines: frozenset[str] = frozenset({"seem"})  # engines routed to the gpu queue unless device=cpu
    cleanup_interval_s: float = 600.0



@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()

"""Service settings, read from ``VOS_*`` environment variables by the API and the workers alike.

The timing settings depend on each other; :class:`ServiceSettings` refuses combinations that would lose or
duplicate work (e.g. a broker visibility timeout shorter than the task time limit redelivers every long job
while it still runs).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

QUEUES = ("cpu", "gpu")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOS_", env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           validation_alias=AliasChoices("VOS_REDIS_URL", "REDIS_URL", "redis_url"))
    key_prefix: str = "vos:"  # every Redis key of the service (jobs, streams, broker) starts with it
    storage_url: str = "./vos-storage"  # fsspec URL of the folder holding uploads, frames and results

    max_upload_bytes: int = Field(500 * 1024 * 1024, gt=0)
    max_prompt_file_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_form_field_bytes: int = Field(4 * 1024 * 1024, gt=0)  # the `prompts` and `options` form fields
    max_frames: int = Field(10_000, gt=0)
    max_duration_s: float = Field(600.0, gt=0)
    min_video_side: int = Field(16, gt=0)  # smaller frames leave engines nothing to segment
    max_video_pixels: int = Field(4096 * 2304, gt=0)  # width x height; 4K UHD and DCI 4K fit
    allowed_containers: frozenset[str] = frozenset({"mp4", "mov", "mkv", "webm", "avi", "m4v"})
    api_key: str | None = None  # when set, /v1 requires the X-API-Key header; an empty value is refused

    http_body_timeout_s: float = Field(30.0, gt=0)  # longest wait for the next chunk of a request body
    http_min_body_bytes_per_s: int = Field(8192, ge=0)  # slower bodies are cut off after http_body_timeout_s
    http_keep_alive_s: float = Field(5.0, gt=0)  # idle keep-alive connections are closed after this long
    http_max_concurrency: int = Field(200, gt=0)  # connections + requests at once; more get a 503

    stream_maxlen: int = Field(1000, gt=0)  # frames kept per job in its Redis stream; older ones come from storage
    retention_s: float = Field(24 * 3600.0, gt=0)  # finished jobs are deleted this long after they end
    orphan_grace_s: float = Field(600.0, gt=0)  # job folders without a record are removed after this long
    lease_s: float = Field(15.0, gt=0)  # a job whose worker stopped renewing its lease this long is re-queued
    reaper_interval_s: float = Field(5.0, gt=0)  # how often a worker looks for jobs of lost workers
    max_attempts: int = Field(3, ge=1)  # runs of one job before it is failed as interrupted too often
    unserved_queue_s: float = Field(600.0, gt=0)  # a job waiting this long on a queue no worker serves is failed
    redispatch_after_s: float = Field(60.0, gt=0)  # a waiting job whose queue is empty this long lost its task
    redis_retry_s: float = Field(60.0, ge=0)  # Redis operations are retried with backoff for about this long
    redis_timeout_s: float = Field(5.0, gt=0)  # a Redis command waits this long for an answer, then retries
    worker_alive_s: float = Field(15.0, gt=0)  # a worker without a heartbeat for this long counts as gone
    visibility_timeout_s: float = Field(3900.0, gt=0)  # an unacknowledged task is redelivered after this long
    restore_interval_s: int = Field(10, gt=0)  # how often workers look for unacknowledged tasks to restore
    task_soft_time_limit_s: float = Field(3600.0, gt=0)
    task_time_limit_s: float = Field(3700.0, gt=0)
    gpu_engines: frozenset[str] = frozenset({"seem"})  # engines routed to the gpu queue unless device=cpu
    cleanup_interval_s: float = Field(600.0, gt=0)

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: str | None) -> str | None:
        if key is not None and not key.strip():
            raise ValueError("VOS_API_KEY is set but empty: set a secret key, or unset the variable to run without "
                             "authentication")
        return key

    @model_validator(mode="after")
    def _timings_agree(self) -> ServiceSettings:
        problems = []
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            problems.append("task_time_limit_s must exceed task_soft_time_limit_s (the job's own deadline comes first)")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            problems.append("visibility_timeout_s must exceed task_time_limit_s, or every long job is redelivered "
                            "while it still runs")
        if self.lease_s < 3 * self.redis_timeout_s / 2:
            problems.append("lease_s must be at least 1.5 x redis_timeout_s, so one slow renewal does not lose it")
        if self.worker_alive_s < self.lease_s / 3 * 2:
            problems.append("worker_alive_s must cover two heartbeats (lease_s / 3 apart)")
        if problems:
            raise ValueError("inconsistent service settings: " + "; ".join(problems))
        return self

    @property
    def renew_interval_s(self) -> float:
        """Leases and worker heartbeats are renewed three times per lease period."""
        return self.lease_s / 3


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()

"""Typed job models: the job record kept in Redis (:class:`Job`) and the job spec kept in storage (:class:`JobSpec`)."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what the API accepts as an id; anything else is refused early
NEW_JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{22}$"  # what new_job_id() makes: storage holds only such folders


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # its worker was lost (or the store was unreachable); queued again for another worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)
RESULT_FILES = {"masks.zip": "application/zip", "masks.jsonl": "application/x-ndjson", "overlay.mp4": "video/mp4"}


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


class Job(BaseModel):
    """A job's record: what the status endpoint shows and what workers update as it runs."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: JobState
    engine: str
    queue: str
    width: int
    height: int
    fps: float
    num_frames: int
    objects: int
    created_at: float
    dispatched_at: float | None = None  # when its task was last put on the queue
    started_at: float | None = None
    finished_at: float | None = None
    last_frame: int = -1
    frames_done: int = 0
    attempts: int = 0
    compute_s: float = 0.0
    error: str | None = None
    retry_reason: str | None = None  # why the job is (or was last) being retried
    worker: str | None = None  # the worker running it (host:pid), or that ran it last
    files_deleted: bool = False

    @classmethod
    def from_redis(cls, raw: Mapping[bytes | str, bytes | str]) -> Job:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return cls.model_validate({k: (v or None) for k, v in fields.items() if k in cls.model_fields})


def redis_fields(**fields: Any) -> dict[str, str]:
    """Values as Redis hash fields: booleans as 1/0, floats exactly, None as the empty string."""
    return {name: _field(value) for name, value in fields.items()}


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return repr(value) if isinstance(value, float) else str(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobSpec(BaseModel):
    """What a worker needs to run a job: written once by the API as ``input/job.json``."""

    video: str = Field(description="file name of the video inside the job's input folder")
    prompts: list[dict[str, Any]]
    files: dict[str, str] = Field(default_factory=dict, description="uploaded part name -> path under input/")
    engine: str
    options: dict[str, Any] = Field(default_factory=dict)
    overlay: bool = True

"""Pydantic models of the API's responses (they also document the OpenAPI schema)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from workers.core.models import Job, JobState


class JobCreated(BaseModel):
    id: str = Field(description="unguessable job id")
    state: JobState
    status_url: str
    stream_url: str


class VideoMeta(BaseModel):
    width: int
    height: int
    fps: float
    num_frames: int


class Timings(BaseModel):
    created_at: float = Field(description="Unix time the job was queued")
    started_at: float | None = None
    finished_at: float | None = None
    queued_s: float | None = Field(None, description="seconds waiting for a worker")
    running_s: float | None = Field(None, description="seconds from start to finish (or to now)")
    compute_s: float = Field(0.0, description="seconds the engine spent on frames")


class JobStatus(BaseModel):
    id: str
    state: JobState
    engine: str
    frames_done: int
    frames_total: int
    frames_per_second: float | None = None
    attempts: int = Field(description="worker runs of the job; more than 1 after a worker was lost")
    retry_reason: str | None = Field(None, description="why the job is being (or was) run again, if it was")
    video: VideoMeta
    timings: Timings
    error: str | None = None
    files_deleted: bool = False
    results: dict[str, str] = Field(default_factory=dict, description="download URLs, once the job succeeded")

    @classmethod
    def from_job(cls, job: Job, results: dict[str, str]) -> JobStatus:
        running_s = ((job.finished_at or time.time()) - job.started_at) if job.started_at else None
        return cls(
            id=job.id, state=job.state, engine=job.engine, frames_done=job.frames_done, frames_total=job.num_frames,
            frames_per_second=round(job.frames_done / running_s, 3) if running_s else None,
            attempts=job.attempts, retry_reason=job.retry_reason,
            video=VideoMeta(width=job.width, height=job.height, fps=job.fps, num_frames=job.num_frames),
            timings=Timings(created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                            queued_s=(job.started_at - job.created_at) if job.started_at else None,
                            running_s=running_s, compute_s=job.compute_s),
            error=job.error, files_deleted=job.files_deleted, results=results,
        )


class Problem(BaseModel):
    detail: str

"""Pydantic models of the API's responses (they also document the OpenAPI schema)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from workers.jobs import JobState


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
    video: VideoMeta
    timings: Timings
    error: str | None = None
    files_deleted: bool = False
    results: dict[str, str] = Field(default_factory=dict, description="download URLs, once the job succeeded")

    @classmethod
    def from_record(cls, record: dict[str, str], results: dict[str, str]) -> JobStatus:
        started = _float(record.get("started_at"))
        finished = _float(record.get("finished_at"))
        created = float(record["created_at"])
        done = int(record.get("frames_done", 0))
        running_s = ((finished or time.time()) - started) if started else None
        return cls(
            id=record["id"],
            state=JobState(record["state"]),
            engine=record["engine"],
            frames_done=done,
            frames_total=int(record["num_frames"]),
            frames_per_second=round(done / running_s, 3) if running_s else None,
            attempts=int(record.get("attempts", 0)),
            video=VideoMeta(width=int(record["width"]), height=int(record["height"]), fps=float(record["fps"]),
                            num_frames=int(record["num_frames"])),
            timings=Timings(created_at=created, started_at=started, finished_at=finished,
                            queued_s=(started - created) if started else None, running_s=running_s,
                            compute_s=float(record.get("compute_s", 0.0))),
            error=record.get("error") or None,
            files_deleted=record.get("files_deleted") == "1",
            results=results,
        )


class Problem(BaseModel):
    detail: str


def _float(value: str | None) -> float | None:
    return float(value) if value else None

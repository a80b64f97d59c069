"""The /v1 job endpoints: create, status, frame stream, downloads, cancel."""

from __future__ import annotations

import enum
import json
import time
from typing import Annotated, AsyncIterator

import anyio
from fastapi import APIRouter, Depends, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile as StarletteUploadFile

from api.deps import ServiceContext, get_context, require_api_key
from api.schemas import JobCreated, JobStatus, Problem
from api.streaming import EndEvent, FrameEvent, job_events
from api.uploads import JobRequest, UploadedFile, create_job
from workers.jobs import ACTIVE_STATES, RESULT_FILES, JobState

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)],
                   responses={401: {"model": Problem, "description": "missing or wrong API key"}})

NDJSON = "application/x-ndjson"
UPLOAD_OVERHEAD = 16 << 20  # multipart headers and mask files on top of the video itself
STREAM_GRACE_S = 60
Context = Annotated[ServiceContext, Depends(get_context)]


class ResultName(str, enum.Enum):
    masks_zip = "masks.zip"
    masks_json = "masks.json"
    overlay_mp4 = "overlay.mp4"


@router.post(
    "/jobs", status_code=202, response_model=JobCreated,
    responses={413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
)
async def submit_job(
    request: Request,
    context: Context,
    video: Annotated[UploadFile, File(description="the video (mp4, mov, mkv, webm, avi, m4v)")],
    prompts: Annotated[str, Form(description='JSON list of object prompts, e.g. [{"object_id": 1, "points": [{"x": 10, "y": 20}]}]; '
                                             'masks as {"rle": ...}, {"png_base64": ...} or {"file": "<part name>"}')],
    engine: Annotated[str, Form(description="tracking engine")] = "classical",
    options: Annotated[str, Form(description="JSON object of engine options")] = "{}",
    overlay: Annotated[bool, Form(description="also render an overlay MP4")] = True,
    files: Annotated[list[UploadFile], File(description="mask/reference images that prompts refer to by name")] = [],
) -> JobCreated:
    """Upload a video with prompts and queue a tracking job."""
    form = await request.form()
    extra = [UploadedFile(field, part.filename, part.file) for field, part in form.multi_items()
             if isinstance(part, StarletteUploadFile) and field != "video"]
    job_request = JobRequest(UploadedFile("video", video.filename, video.file), prompts, engine, options, overlay, extra)
    created = await anyio.to_thread.run_sync(create_job, job_request, context.settings, context.store, context.storage,
                                             context.celery.send_task)
    job_url = request.url_for("job_status", job_id=created.job_id)
    return JobCreated(id=created.job_id, state=JobState.QUEUED, status_url=str(job_url),
                      stream_url=str(request.url_for("job_frames", job_id=created.job_id)))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
async def job_status(job_id: str, request: Request, context: Context) -> JobStatus:
    """The job's state, progress, timings and, once it succeeded, its download URLs."""
    # Async Redis: the most polled endpoint should not queue for the thread pool.
    raw = await context.aredis.hgetall(context.store.keys.job(job_id))
    if not raw:
        raise HTTPException(404, f"no job {job_id!r} (it may have expired)")
    record = {k.decode(): v.decode() for k, v in raw.items()}
    results = {}
    if record["state"] == JobState.SUCCEEDED.value and record.get("files_deleted") != "1":
        results = {name.value: str(request.url_for("job_result", job_id=job_id, name=name.value)) for name in ResultName}
    return JobStatus.from_record(record, results)


@router.get(
    "/jobs/{job_id}/frames",
    responses={200: {"content": {"text/event-stream": {}, NDJSON: {}},
                     "description": "one event per frame (id = frame index), then an `end` event"},
               404: {"model": Problem}, 410: {"model": Problem}},
)
async def job_frames(
    job_id: str,
    context: Context,
    accept: Annotated[str, Header()] = "text/event-stream",
    last_event_id: Annotated[str | None, Header(description="resume after this frame index")] = None,
    after: Annotated[int | None, Query(ge=-1, description="resume after this frame index (like Last-Event-ID)")] = None,
) -> StreamingResponse:
    """Stream every frame's masks as Server-Sent Events, or as NDJSON with `Accept: application/x-ndjson`.

    Each frame is sent once, in order, including frames computed before the client connected; the stream ends
    with the job (an `end` event / a final `{"end": ...}` line carrying the final state)."""
    record = await anyio.to_thread.run_sync(_record, context, job_id)
    if record.get("files_deleted") == "1":
        raise HTTPException(410, f"job {job_id} was deleted; its frames are gone")
    start_after = _resume_point(last_event_id, after)
    events = job_events(context.aredis, context.store.keys, context.storage, job_id, start_after)
    if NDJSON in accept:
        return StreamingResponse(_ndjson(events), media_type=NDJSON)
    return EventSourceResponse(_sse(events), ping=15)


@router.get("/jobs/{job_id}/results/{name}", responses={404: {"model": Problem}, 409: {"model": Problem},
                                                        410: {"model": Problem}})
def job_result(job_id: str, name: ResultName, context: Context) -> StreamingResponse:
    """Download a result: `masks.zip` (DAVIS palette PNGs), `masks.json` (COCO RLE per frame), `overlay.mp4`."""
    record = _record(context, job_id)
    if record.get("files_deleted") == "1":
        raise HTTPException(410, f"job {job_id} was deleted; its results are gone")
    if record["state"] != JobState.SUCCEEDED.value:
        raise HTTPException(409, f"job {job_id} is {record['state']}; results exist only once it succeeded")
    path = context.storage.path(job_id, "results", name.value)
    if not context.storage.exists(path):
        raise HTTPException(404, f"job {job_id} has no {name.value} (the overlay is skipped when overlay=false)")
    return StreamingResponse(context.storage.read_chunks(path), media_type=RESULT_FILES[name.value],
                             headers={"Content-Disposition": f'attachment; filename="{job_id}-{name.value}"'})


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
def delete_job(job_id: str, context: Context) -> JobStatus:
    """Cancel the job if it is queued or running (its worker stops within a frame) and delete its files.

    The job's record stays, as cancelled, until the retention period ends."""
    _record(context, job_id)
    context.store.transition(job_id, JobState.CANCELLED, ACTIVE_STATES, finished_at=time.time(),
                             error="cancelled by the client")
    with context.store.redis.pipeline() as pipe:
        pipe.hset(context.store.keys.job(job_id), "files_deleted", "1")
        pipe.expire(context.store.keys.stream(job_id), STREAM_GRACE_S)  # connected readers still see the end entry
        pipe.execute()
    context.storage.remove_job(job_id)
    return JobStatus.from_record(_record(context, job_id), {})


def _record(context: ServiceContext, job_id: str) -> dict[str, str]:
    record = context.store.get(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r} (it may have expired)")
    return record


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    if after is not None:
        return after
    if last_event_id is None or not last_event_id.strip():
        return -1
    try:
        return max(-1, int(last_event_id))
    except ValueError:
        raise HTTPException(422, f"Last-Event-ID must be a frame index, got {last_event_id!r}") from None


async def _sse(events: AsyncIterator[FrameEvent | EndEvent]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        if isinstance(event, FrameEvent):
            yield ServerSentEvent(data=event.data, event="frame", id=str(event.index))
        else:
            yield ServerSentEvent(data=event.json(), event="end")


async def _ndjson(events: AsyncIterator[FrameEvent | EndEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, FrameEvent):
            yield event.data.encode() + b"\n"
        else:
            yield json.dumps({"end": json.loads(event.json())}).encode() + b"\n"

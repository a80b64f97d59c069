"""The /v1 job endpoints: create, status, frame stream, downloads, cancel."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from api.deps import ServiceContext, get_context, require_api_key
from api.schemas import JobCreated, JobStatus, Problem
from api.streaming import EndEvent, FrameEvent, job_events
from api.uploads import JobRequest, UploadedFile, UploadError, create_job
from vos.engine import DEFAULT_ENGINE, available_engines, engine_options_class
from workers.core.models import JOB_ID_PATTERN, RESULT_FILES, Job, JobState

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)],
                   responses={401: {"model": Problem, "description": "missing or wrong API key"}})

NDJSON = "application/x-ndjson"
UPLOAD_OVERHEAD = 16 << 20  # multipart headers and mask files on top of the video itself
STREAM_GRACE_S = 60
MAX_FORM_PARTS = 64
Context = Annotated[ServiceContext, Depends(get_context)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the id returned when the job was created")]
ResultName = enum.Enum("ResultName", {name.replace(".", "_"): name for name in RESULT_FILES}, type=str)


def _engine_option_schemas() -> dict[str, Any]:
    """Each registered engine's options model as JSON Schema (engines whose code is not installed are left out)."""
    schemas = {}
    for name in available_engines():
        try:
            schemas[name] = engine_options_class(name).model_json_schema()
        except ImportError:
            continue
    return schemas


_SUBMIT_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["video", "prompts"],
    "properties": {
        "video": {"type": "string", "format": "binary", "description": "the video (mp4, mov, mkv, webm, avi, m4v)"},
        "prompts": {"type": "string", "description": 'JSON list of object prompts, e.g. [{"object_id": 1, "points": '
                    '[{"x": 10, "y": 20}]}]; masks as {"rle": ...}, {"png_base64": ...} or {"file": "<part name>"}'},
        "engine": {"type": "string", "default": DEFAULT_ENGINE, "description": "tracking engine"},
        "options": {"type": "string", "default": "{}", "x-engine-options": _engine_option_schemas(),
                    "description": "JSON object of the engine's options, checked at submission; each engine's "
                                   "options are described in x-engine-options"},
        "overlay": {"type": "boolean", "default": True, "description": "also render an overlay MP4"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "mask/reference images that prompts refer to by name (any other part name works too)"},
    }}}}}}


@router.post(
    "/jobs", status_code=202, response_model=JobCreated, openapi_extra=_SUBMIT_FORM,
    responses={408: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem},
               503: {"model": Problem}},
)
async def submit_job(request: Request, context: Context) -> JobCreated:
    """Upload a video with prompts and queue a tracking job."""
    form = await _form(request, context.settings.max_form_field_bytes)
    try:
        job_request = _job_request(form)
        job = await anyio.to_thread.run_sync(create_job, job_request, context.settings, context.store,
                                             context.storage, context.send_job)
    finally:
        await form.close()
    return JobCreated(id=job.id, state=job.state, status_url=str(request.url_for("job_status", job_id=job.id)),
                      stream_url=str(request.url_for("job_frames", job_id=job.id)))


async def _form(request: Request, max_field_bytes: int) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(415, "send the job as multipart/form-data with a 'video' file part and a 'prompts' field")
    try:
        return await request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS, max_part_size=max_field_bytes)
    except (MultiPartException, StarletteHTTPException) as error:  # Starlette wraps the first into the second
        message = str(getattr(error, "message", None) or getattr(error, "detail", ""))
        if "maximum size" in message:
            raise UploadError(413, f"a form field ('prompts' or 'options') is larger than {max_field_bytes} bytes; "
                                   "send large masks as file parts") from None
        raise UploadError(400, f"the multipart body is malformed: {message}") from None


def _job_request(form: FormData) -> JobRequest:
    video = form.get("video")
    if not isinstance(video, StarletteUploadFile):
        raise UploadError(422, "video: a file part named 'video' is required")
    extra = [UploadedFile(field, part.filename, part.file) for field, part in form.multi_items()
             if isinstance(part, StarletteUploadFile) and field != "video"]
    return JobRequest(UploadedFile("video", video.filename, video.file), _text_field(form, "prompts"),
                      _text_field(form, "engine", DEFAULT_ENGINE), _text_field(form, "options", "{}"),
                      _flag(_text_field(form, "overlay", "true")), extra)


def _text_field(form: FormData, name: str, default: str | None = None) -> str:
    value = form.get(name, default)
    if value is None:
        raise UploadError(422, f"{name}: the form field {name!r} is required")
    if not isinstance(value, str):
        raise UploadError(422, f"{name}: must be a form field, not a file part")
    return value


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise UploadError(422, f"overlay: must be true or false, got {value!r}")
    return lowered in ("true", "1", "yes", "on")


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
async def job_status(job_id: JobId, request: Request, context: Context) -> Response:
    """The job's state, progress, timings and, once it succeeded, its download URLs."""
    job = await context.astore.get(job_id)  # async: the most polled endpoint must not queue for the thread pool
    if job is None:
        raise _no_job(job_id)
    results = {}
    if job.state is JobState.SUCCEEDED and not job.files_deleted:
        results = {name: str(request.url_for("job_result", job_id=job_id, name=name)) for name in RESULT_FILES}
    # Serialised here: the model was built from validated data, so FastAPI's second validation pass is skipped.
    return Response(JobStatus.from_job(job, results).model_dump_json(), media_type="application/json")


@router.get(
    "/jobs/{job_id}/frames",
    responses={200: {"content": {"text/event-stream": {}, NDJSON: {}},
                     "description": "one event per frame (id = frame index), then an `end` event"},
               404: {"model": Problem}, 410: {"model": Problem}},
)
async def job_frames(
    job_id: JobId,
    context: Context,
    accept: Annotated[str, Header()] = "text/event-stream",
    last_event_id: Annotated[str | None, Header(description="resume after this frame index")] = None,
    after: Annotated[int | None, Query(ge=-1, le=1 << 31, description="resume after this frame index")] = None,
) -> StreamingResponse:
    """Stream every frame's masks as Server-Sent Events, or as NDJSON with `Accept: application/x-ndjson`.

    Each frame is sent once, in order, including frames computed before the client connected; a later revision
    of a frame (from engines that refine earlier frames) is sent again with the same index. The stream ends with
    the job (an `end` event / a final `{"end": ...}` line carrying the final state and error)."""
    job = await context.astore.get(job_id)
    if job is None:
        raise _no_job(job_id)
    if job.files_deleted:
        raise HTTPException(410, f"job {job_id} was deleted; its frames are gone")
    events = job_events(context.astore, context.storage, job_id, _resume_point(last_event_id, after))
    if NDJSON in accept:
        return StreamingResponse(_ndjson(events), media_type=NDJSON)
    return EventSourceResponse(_sse(events), ping=15)


@router.get("/jobs/{job_id}/results/{name}", responses={404: {"model": Problem}, 409: {"model": Problem},
                                                        410: {"model": Problem}})
def job_result(job_id: JobId, name: ResultName, context: Context) -> StreamingResponse:
    """Download a result: `masks.zip` (DAVIS palette PNGs), `masks.jsonl` (COCO RLE per frame), `overlay.mp4`."""
    job = _job(context, job_id)
    if job.files_deleted:
        raise HTTPException(410, f"job {job_id} was deleted; its results are gone")
    if job.state is not JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {job.state.value}; results exist only once it succeeded")
    path = context.storage.path(job_id, "results", name.value)
    if not context.storage.exists(path):
        raise HTTPException(404, f"job {job_id} has no {name.value} (the overlay is skipped when overlay=false)")
    return StreamingResponse(context.storage.read_chunks(path), media_type=RESULT_FILES[name.value],
                             headers={"Content-Disposition": f'attachment; filename="{job_id}-{name.value}"'})


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
def delete_job(job_id: JobId, context: Context) -> JobStatus:
    """Cancel the job if it is queued or running (its worker stops within a second) and delete its files.

    The job's record stays, as cancelled, until the retention period ends."""
    if not context.store.cancel(job_id, STREAM_GRACE_S):
        raise _no_job(job_id)
    context.storage.remove_job(job_id)
    return JobStatus.from_job(_job(context, job_id), {})


def _job(context: ServiceContext, job_id: str) -> Job:
    job = context.store.get(job_id)
    if job is None:
        raise _no_job(job_id)
    return job


def _no_job(job_id: str) -> HTTPException:
    return HTTPException(404, f"no job {job_id!r} (it may have expired)")


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
            yield b'{"end": ' + event.json().encode() + b"}\n"

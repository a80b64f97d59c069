"""The /v1/sessions endpoints (interactive sessions) and the studio page at ``/``.

The API holds no session state: it checks each request, forwards it to the worker the session is pinned to and
relays the reply (see :mod:`workers.sessions` for pinning, recovery and revisions). Frame JPEGs and the thumbnail
strip are decoded here from the session's stored video, so scrubbing never waits on a worker.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import cv2
import numpy as np
import redis
from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from api.deps import ServiceContext, get_context, require_api_key
from api.schemas import Problem, VideoMeta
from api.uploads import (
    available_engine_class,
    check_kinds,
    probe_video,
    queue_for,
    store_video,
    validated_options,
    video_container,
)
from vos.engine import DEFAULT_ENGINE, engine_class
from vos.errors import PromptError
from vos.masks import MAX_OBJECT_ID
from vos.prompts import parse_prompts, validate_prompts
from vos.video import VideoInfo
from workers.core.models import RESULT_FILES, new_job_id
from workers.core.settings import ServiceSettings
from workers.core.storage import Storage
from workers.sessions import (
    DIRECTIONS,
    FrameReader,
    SessionCommandError,
    SessionRecord,
    SessionSettings,
    SessionStore,
    get_session_settings,
    no_worker_message,
    session_storage,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
NDJSON = "application/x-ndjson"
EVENT_BLOCK_MS = 1000  # between reads, the stream checks that the session and its worker still exist
SESSION_ID = PathParam(min_length=10, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")

router = APIRouter(prefix="/sessions", tags=["sessions"], dependencies=[Depends(require_api_key)],
                   responses={401: {"model": Problem, "description": "missing or wrong API key"},
                              404: {"model": Problem, "description": "no such session (it may have expired)"}})
T = TypeVar("T")


class Sessions:
    """What the session endpoints share: the session store, storage, and open videos for frame reads."""

    def __init__(self, settings: ServiceSettings, session_settings: SessionSettings) -> None:
        self.store = SessionStore(settings, session_settings)
        self.storage = session_storage(settings, session_settings)
        self._readers: OrderedDict[str, FrameReader] = OrderedDict()
        self._readers_lock = threading.Lock()  # frames are read from the thread pool

    def record(self, session_id: str) -> SessionRecord:
        record = self.store.get(session_id)
        if record is None:
            raise HTTPException(404, f"no session {session_id!r} (it may have expired)")
        return record

    def frames(self, record: SessionRecord) -> FrameReader:
        with self._readers_lock:
            reader = self._readers.get(record.id)
            if reader is None:
                reader = self._readers[record.id] = FrameReader(self._local_video(record))
                while len(self._readers) > 8:  # decoders of the most recently viewed sessions
                    self._readers.popitem(last=False)
            self._readers.move_to_end(record.id)
            return reader

    def _local_video(self, record: SessionRecord) -> str:
        path = self.storage.path(record.id, "input", record.video)
        if self.storage.is_local:
            return path
        local = Path(tempfile.mkdtemp(prefix="vos-frames-")) / record.video
        self.storage.fs.get_file(path, str(local))
        return str(local)

    def forget(self, session_id: str) -> None:
        with self._readers_lock:
            self._readers.pop(session_id, None)


def mount_studio(app: FastAPI, settings: ServiceSettings) -> None:
    """Add the /v1/sessions endpoints and serve the studio page at ``/``."""
    app.state.sessions = Sessions(settings, get_session_settings())
    app.include_router(router, prefix="/v1")
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="studio")


def get_sessions(request: Request) -> Sessions:
    return request.app.state.sessions


Context = Annotated[ServiceContext, Depends(get_context)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
SessionId = Annotated[str, SESSION_ID]


# ---------------------------------------------------------------------------------------------- models


class SessionStatus(BaseModel):
    id: str
    engine: str
    options: dict[str, Any]
    pool: str = Field(description="the worker pool (cpu or gpu) whose workers hold the session")
    video: VideoMeta
    supported_prompts: list[str] = Field(description="prompt kinds the session's engine accepts")
    unsupported_hint: str = Field(description="why other prompt kinds are refused, and what to do instead")
    run: dict[str, Any] | None = Field(None, description="the propagation in progress: id, start, direction, total")
    revisions: int = Field(description="frame revisions published so far")
    expires_at: float | None = Field(None, description="Unix time the session expires unless used again")
    source_job: str | None = None
    events_url: str


class PropagateRequest(BaseModel):
    start: int = Field(ge=0, alias="from", description="the frame to propagate from")
    direction: str = Field("both", pattern="^(forward|backward|both)$", description=" | ".join(DIRECTIONS))


class FrameMasks(BaseModel):
    frame: int
    revision: int = Field(description="the frame's revision: it grows each time the frame's masks change")
    run: str = Field("", description="the propagation that produced it; empty for a prompt, \"job\" for the masks "
                                     "of the job the session was opened from")
    objects: list[dict[str, Any]] = Field(description="every object's COCO RLE mask, score, area and bbox")
    worker_ms: float | None = Field(None, description="time the worker spent applying the change (decoding the "
                                                      "frame and running the engine)")


class PreparedFrame(BaseModel):
    frame: int
    prepared: bool = Field(description="false when a later frame superseded it, or the session was propagating")
    reason: str | None = Field(None, description="why the frame was not prepared")
    worker_ms: float | None = Field(None, description="time the worker spent preparing the frame")


# ---------------------------------------------------------------------------------------------- endpoints


@router.post("", status_code=201, response_model=SessionStatus,
             responses={409: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem},
                        422: {"model": Problem}})
async def create_session(
    request: Request,
    context: Context,
    sessions: SessionsDep,
    video: Annotated[UploadFile | None, File(description="the video (same containers and limits as jobs)")] = None,
    job_id: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9_-]{10,64}$",
                                       description="open the video of this job instead of uploading one")] = None,
    engine: Annotated[str, Form(description="tracking engine")] = DEFAULT_ENGINE,
    options: Annotated[str, Form(description="JSON object of engine options")] = "{}",
) -> SessionStatus:
    """Open a session on an uploaded video, or on an existing job's video."""
    if (video is None) == (job_id is None):
        raise HTTPException(422, "give either a video file or a job_id, not both and not neither")
    # The jobs' checks, SEEM weights files included.
    engine_options = validated_options(options, available_engine_class(engine))
    queue = queue_for(engine, engine_options, context.settings)
    if not await _run(sessions.store.live_workers, queue):
        raise HTTPException(503, no_worker_message(queue, engine))
    session_id = new_job_id()
    try:
        if video is not None:
            name, info = await anyio.to_thread.run_sync(_store_upload, video, sessions.storage, session_id,
                                                         context.settings)
        else:
            name, info = await anyio.to_thread.run_sync(_copy_job_video, job_id, context, sessions.storage,
                                                         session_id)
        await _run(sessions.store.create, session_id, engine, engine_options, queue, name, info, job_id)
        if job_id is not None:
            await _run(_import_job, context, sessions, job_id, session_id, info)
    except BaseException:
        await _run(sessions.store.delete, session_id)
        await _run(sessions.storage.remove_job, session_id)
        raise
    return await _status(request, sessions, session_id)


@router.get("/{session_id}", response_model=SessionStatus)
async def session_status(session_id: SessionId, request: Request, sessions: SessionsDep) -> SessionStatus:
    """The session's video, engine capabilities, propagation in progress and expiry."""
    return await _status(request, sessions, session_id)


@router.get("/{session_id}/frames/{index}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 422: {"model": Problem}})
async def session_frame(session_id: SessionId, sessions: SessionsDep,
                        index: Annotated[int, PathParam(ge=0)],
                        width: Annotated[int | None, Query(ge=16, le=8192, description="resize to this width")] = None,
                        quality: Annotated[int, Query(ge=10, le=100)] = 85) -> Response:
    """One frame as JPEG, optionally resized to ``width`` (the aspect ratio is kept)."""
    record = await _run(sessions.record, session_id)
    _check_frame(record, index)
    reader = await _run(sessions.frames, record)
    data = await _run(_jpeg, reader, index, width, quality)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{session_id}/thumbnails", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the thumbnails side by side"}})
async def session_thumbnails(session_id: SessionId, sessions: SessionsDep,
                             count: Annotated[int, Query(ge=1, le=200)] = 20,
                             height: Annotated[int, Query(ge=16, le=360)] = 54) -> Response:
    """A strip of ``count`` thumbnails side by side, of frames spread evenly over the video.

    The ``X-Frames`` header lists the frame index of each thumbnail, left to right."""
    record = await _run(sessions.record, session_id)
    reader = await _run(sessions.frames, record)
    indices = sorted({int(round(i)) for i in np.linspace(0, record.info.num_frames - 1, count)})
    data = await _run(_strip, reader, indices, height)
    return Response(data, media_type="image/jpeg",
                    headers={"X-Frames": ",".join(map(str, indices)), "Cache-Control": "private, max-age=3600"})


@router.post("/{session_id}/frames/{index}/prepare", response_model=PreparedFrame, responses={422: {"model": Problem}})
async def prepare_frame(session_id: SessionId, sessions: SessionsDep,
                        index: Annotated[int, PathParam(ge=0)]) -> PreparedFrame:
    """Let the session's worker decode the frame and compute what a prompt on it needs (the engine's per-frame
    data: the classical engine's motion cue, SEEM's image features) while the user looks at it, so that a click
    there costs only the engine's decision. The page calls it for the frame it shows.

    Only the frame asked for last is prepared: a request still waiting when a later one comes answers
    ``prepared: false``, and so does one made while the session propagates."""
    _check_frame(await _run(sessions.record, session_id), index)
    return PreparedFrame(**await _call(sessions, session_id, "prepare", {"frame": index}))


@router.post("/{session_id}/prompts", response_model=FrameMasks, responses={409: {"model": Problem},
                                                                           422: {"model": Problem}})
async def add_prompt(session_id: SessionId, sessions: SessionsDep, response: Response,
                     prompt: Annotated[dict[str, Any], Body(description=(
                         'one object prompt on one frame, e.g. {"object_id": 1, "frame_index": 0, '
                         '"points": [{"x": 10, "y": 20, "positive": true}]}; box, scribbles, mask '
                         '({"rle": ...} or {"png_base64": ...}), text'))]) -> FrameMasks:
    """Add a prompt (or a correction) for an object on a frame; returns that frame's masks for every object.

    The ``Server-Timing`` header splits the time the API spent: ``check`` (the prompt's checks), ``relay`` (the
    round trip to the session's worker), ``worker`` (the worker's part of it, from receiving the command to its
    reply) and ``engine`` (the library session applying the prompt: the engine's decision)."""
    begin = time.perf_counter()
    record = await _run(sessions.record, session_id)
    await _run(_check_prompt, record, prompt)
    checked = time.perf_counter()
    timings: dict[str, float] = {}
    masks = FrameMasks(**await _call(sessions, session_id, "prompt", prompt, timings))
    relay_ms = 1000 * (time.perf_counter() - checked)
    response.headers["Server-Timing"] = ", ".join(
        f"{name};dur={value:.1f}" for name, value in (
            ("check", 1000 * (checked - begin)), ("relay", relay_ms),
            ("worker", timings.get("worker_total_ms", 0.0)), ("engine", masks.worker_ms or 0.0),
            ("api", 1000 * (time.perf_counter() - begin))))
    return masks


@router.delete("/{session_id}/objects/{object_id}", responses={200: {"description": "the object is gone"}})
async def remove_object(session_id: SessionId, sessions: SessionsDep,
                        object_id: Annotated[int, PathParam(ge=1, le=MAX_OBJECT_ID)]) -> dict[str, int]:
    """Remove an object from every frame."""
    await _run(sessions.record, session_id)
    await _call(sessions, session_id, "remove", {"object_id": object_id})
    return {"removed": object_id}


@router.delete("/{session_id}/objects/{object_id}/frames/{frame}", response_model=FrameMasks,
               responses={422: {"model": Problem}})
async def clear_prompts(session_id: SessionId, sessions: SessionsDep,
                        object_id: Annotated[int, PathParam(ge=1, le=MAX_OBJECT_ID)],
                        frame: Annotated[int, PathParam(ge=0)]) -> FrameMasks:
    """Clear an object's prompts on one frame; returns the frame's masks."""
    _check_frame(await _run(sessions.record, session_id), frame)
    return FrameMasks(**await _call(sessions, session_id, "clear", {"object_id": object_id, "frame": frame}))


@router.post("/{session_id}/undo", response_model=FrameMasks, responses={409: {"model": Problem}})
async def undo(session_id: SessionId, sessions: SessionsDep) -> FrameMasks:
    """Undo the last prompt; returns the masks of its frame."""
    await _run(sessions.record, session_id)
    return FrameMasks(**await _call(sessions, session_id, "undo", {}))


@router.post("/{session_id}/propagate", status_code=202, responses={409: {"model": Problem},
                                                                    422: {"model": Problem}})
async def propagate(session_id: SessionId, sessions: SessionsDep, body: PropagateRequest) -> dict[str, Any]:
    """Start propagating from a frame; frames stream on ``/events``. A later change stops it."""
    _check_frame(await _run(sessions.record, session_id), body.start)
    return await _call(sessions, session_id, "propagate", {"start": body.start, "direction": body.direction})


@router.post("/{session_id}/stop")
async def stop(session_id: SessionId, sessions: SessionsDep) -> dict[str, bool]:
    """Stop the propagation in progress (the frames done so far stay)."""
    await _run(sessions.record, session_id)
    await _call(sessions, session_id, "stop", {})
    return {"stopped": True}


@router.get("/{session_id}/events",
            responses={200: {"content": {"text/event-stream": {}, NDJSON: {}},
                             "description": "`frame` events (id = stream entry id) and `run` events"}})
async def session_events(
    session_id: SessionId, context: Context, sessions: SessionsDep,
    accept: Annotated[str, Header()] = "text/event-stream",
    last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
    after: Annotated[str | None, Query(pattern=r"^\d+-\d+$", description="resume after this event id")] = None,
    until_run: Annotated[str | None, Query(description="end the stream when this propagation ends")] = None,
) -> StreamingResponse:
    """Every revision of every frame, once each and in order, as Server-Sent Events or NDJSON.

    A `frame` event carries {frame, revision, run, objects}; a `run` event a propagation's start and end
    ({id, start, direction, total, state, error}). Reconnect with Last-Event-ID (or ``after``) to get every later
    revision exactly once. The stream ends with an `end` event when the session is deleted or expires, or when
    the propagation ``until_run`` ends."""
    await _run(sessions.record, session_id)
    cursor = after or _event_id(last_event_id) or "0-0"
    events = _events(context, sessions, session_id, cursor, until_run)
    if NDJSON in accept:
        return StreamingResponse(_ndjson(events), media_type=NDJSON)
    return EventSourceResponse(_sse(events), ping=15)


@router.get("/{session_id}/results/{name}", responses={200: {"content": {t: {} for t in RESULT_FILES.values()}}})
async def session_result(session_id: SessionId, sessions: SessionsDep,
                         name: Annotated[str, PathParam(pattern="^(masks.zip|masks.jsonl|overlay.mp4)$")]
                         ) -> StreamingResponse:
    """Download the latest revision of every frame: `masks.zip` (DAVIS palette PNGs), `masks.jsonl` (COCO RLE,
    one frame per line) or `overlay.mp4`. Frames never prompted nor propagated are empty."""
    await _run(sessions.record, session_id)
    await _call(sessions, session_id, "export", {})
    path = sessions.storage.path(session_id, "results", name)
    return StreamingResponse(sessions.storage.read_chunks(path), media_type=RESULT_FILES[name],
                             headers={"Content-Disposition": f'attachment; filename="{session_id}-{name}"'})


@router.delete("/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: SessionId, sessions: SessionsDep) -> Response:
    """Delete the session: its worker forgets it, and its records and files are removed."""
    record = await _run(sessions.record, session_id)
    if record.worker and await _run(sessions.store.is_alive, record.worker, record.queue):
        await _call(sessions, session_id, "close", {})
    await _run(sessions.store.delete, session_id)
    await _run(sessions.storage.remove_job, session_id)
    sessions.forget(session_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- helpers


async def _run(function: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(partial(function, *args))


async def _call(sessions: Sessions, session_id: str, op: str, args: dict[str, Any],
                timings: dict[str, float] | None = None) -> dict[str, Any]:
    try:
        return await _run(sessions.store.call, session_id, op, args, timings)
    except SessionCommandError as error:
        raise HTTPException(error.status, str(error)) from None


async def _status(request: Request, sessions: Sessions, session_id: str) -> SessionStatus:
    record = await _run(sessions.record, session_id)
    engine_cls = engine_class(record.engine)
    info = record.info
    return SessionStatus(
        id=record.id, engine=record.engine, options=record.options, pool=record.queue,
        video=VideoMeta(width=info.width, height=info.height, fps=info.fps, num_frames=info.num_frames),
        supported_prompts=sorted(engine_cls.supported_prompts), unsupported_hint=engine_cls.unsupported_hint,
        run=record.run, revisions=await _run(sessions.store.revision_count, session_id),
        expires_at=await _run(sessions.store.expires_at, session_id), source_job=record.source_job,
        events_url=str(request.url_for("session_events", session_id=session_id)))


def _store_upload(video: UploadFile, storage: Storage, session_id: str,
                  settings: ServiceSettings) -> tuple[str, VideoInfo]:
    name = f"video.{video_container(video.filename, settings)}"
    return name, store_video(video.file, storage, session_id, name, settings)


def _copy_job_video(job_id: str, context: ServiceContext, storage: Storage, session_id: str) -> tuple[str, VideoInfo]:
    job = context.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} (it may have expired)")
    found = context.storage.fs.glob(context.storage.path(job_id, "input", "video.*"))
    if job.files_deleted or not found:
        raise HTTPException(410, f"job {job_id} was deleted; its video is gone")
    name = Path(found[0]).name
    with tempfile.TemporaryDirectory(prefix="vos-session-") as tmp:
        local = Path(tmp) / name
        context.storage.fs.get_file(found[0], str(local))
        info = probe_video(local, context.settings)
        storage.put(str(local), storage.path(session_id, "input", name))
    return name, info


def _import_job(context: ServiceContext, sessions: Sessions, job_id: str, session_id: str, info: VideoInfo) -> None:
    """The job's masks become revision 1 of their frames (run "job"): the studio shows them, and corrections and
    propagations start from them.

    The job's prompts become the session's anchors, so that every object of the job takes part in propagations:
    on each frame the job prompted an object, its mask there (what the job made of the prompt, whatever its kind
    or the job's engine, and what the user sees) is logged as a mask prompt, which the worker replays."""
    prompted = {(p.get("object_id"), p.get("frame_index", 0)) for p in context.storage.read_spec(job_id).prompts}
    anchors = []
    for frame in range(info.num_frames):
        try:
            record = json.loads(context.storage.read_bytes(context.storage.frame_path(job_id, frame)))
        except FileNotFoundError:
            continue
        data = sessions.store.publish_objects(session_id, "", frame, json.dumps(record["objects"]), "job")
        assert data is not None, "a new session is pinned to no worker yet"
        sessions.storage.write_bytes(sessions.storage.frame_path(session_id, frame), data.encode())
        anchors += [{"object_id": o["object_id"], "frame_index": frame, "mask": {"rle": o["rle"]}}
                    for o in record["objects"] if (o["object_id"], frame) in prompted and o["area"] > 0]
    if anchors:
        sessions.store.append_log(session_id, {"id": new_job_id(), "op": "import", "args": {"anchors": anchors},
                                               "before": []})


def _check_frame(record: SessionRecord, index: int) -> None:
    if not 0 <= index < record.info.num_frames:
        raise HTTPException(422, f"frame {index} is outside the video, which has {record.info.num_frames} frames "
                                 f"(0 to {record.info.num_frames - 1})")


def _check_prompt(record: SessionRecord, prompt: dict[str, Any]) -> None:
    """Refuse a bad prompt here, with a message, before it reaches the worker."""
    def no_files(name: str) -> bytes:
        raise PromptError(f"session prompts cannot refer to uploaded files ({name!r}); "
                          "give masks inline as {\"rle\": ...} or {\"png_base64\": ...}")

    if "frame_index" not in prompt:
        raise PromptError("the prompt needs a frame_index: the frame it is drawn on")
    check_kinds([prompt], engine_class(record.engine))  # before any image in it is decoded
    parsed = parse_prompts([prompt], no_files)
    validate_prompts(parsed, record.info.width, record.info.height, record.info.num_frames)
    engine_class(record.engine).check_prompts(parsed)


def _jpeg(reader: FrameReader, index: int, width: int | None, quality: int) -> bytes:
    image = reader.frame(index)
    if width is not None and width != image.shape[1]:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "OpenCV failed to encode a decoded frame as JPEG"
    return data.tobytes()


def _strip(reader: FrameReader, indices: list[int], height: int) -> bytes:
    tiles = []
    for index in indices:
        image = reader.frame(index)
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        tiles.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok, "OpenCV failed to encode the thumbnail strip"
    return data.tobytes()


def _event_id(last_event_id: str | None) -> str | None:
    if last_event_id is None or not last_event_id.strip():
        return None
    value = last_event_id.strip()
    parts = value.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise HTTPException(422, f"Last-Event-ID must be an event id like 1712345678901-0, got {value!r}")
    return value


async def _events(context: ServiceContext, sessions: Sessions, session_id: str, cursor: str,
                  until_run: str | None) -> AsyncIterator[tuple[str, str, str]]:
    """(event name, event id, data) for every entry of the session's event stream after ``cursor``.

    If entries after ``cursor`` were trimmed from the stream, the latest revision of every frame is read from
    storage first (with ``cursor`` as their id, so a reconnect during it starts it again); stream entries of
    revisions it already sent are then skipped."""
    keys = sessions.store.keys
    sent: dict[int, int] = {}  # frame -> revision sent from storage
    if await _trimmed_after(context, keys.events(session_id), cursor):
        record = await _run(sessions.record, session_id)
        for frame, data in await _run(_latest_revisions, sessions, record):
            sent[frame] = data["revision"]
            yield "frame", cursor, json.dumps(data)
    while True:
        reply = await context.astore.redis.xread({keys.events(session_id): cursor}, count=100, block=EVENT_BLOCK_MS)
        entries = reply[0][1] if reply else []
        if not entries:
            if not await context.astore.redis.exists(keys.record(session_id)):
                yield "end", "", json.dumps({"state": "deleted", "detail": "the session was deleted or expired"})
                return
            await _run(_resume_if_orphaned, sessions, session_id)
            continue
        for entry_id, fields in entries:
            cursor = entry_id.decode()
            if b"frame" in fields:
                if int(fields[b"revision"]) > sent.get(int(fields[b"frame"]), 0):
                    yield "frame", cursor, fields[b"data"].decode()
                continue
            run = json.loads(fields[b"run"])
            yield "run", cursor, fields[b"run"].decode()
            if until_run is not None and run["id"] == until_run and run["state"] != "running":
                return


async def _trimmed_after(context: ServiceContext, stream: str, cursor: str) -> bool:
    """Whether entries after ``cursor`` may have been trimmed from the stream (a client away for too long)."""
    try:
        info = await context.astore.redis.xinfo_stream(stream)
    except redis.ResponseError:  # no stream yet: nothing was trimmed
        return False
    if info["entries-added"] <= info["length"] or not info.get("first-entry"):
        return False
    first = info["first-entry"][0]
    return _stream_id(cursor) < _stream_id(first.decode() if isinstance(first, bytes) else str(first))


def _stream_id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _latest_revisions(sessions: Sessions, record: SessionRecord) -> list[tuple[int, dict[str, Any]]]:
    storage = sessions.storage
    latest = []
    for frame in range(record.info.num_frames):
        try:
            latest.append((frame, json.loads(storage.read_bytes(storage.frame_path(record.id, frame)))))
        except FileNotFoundError:
            continue
    return latest


def _resume_if_orphaned(sessions: Sessions, session_id: str) -> None:
    """A client is waiting on a propagation whose worker died: re-pin the session, which resumes it."""
    record = sessions.store.get(session_id)
    if record is not None and record.run is not None and not sessions.store.is_alive(record.worker, record.queue):
        try:
            sessions.store.call(session_id, "resume", {})
        except SessionCommandError:
            pass  # no live worker yet: the next round tries again, and the client keeps waiting


async def _sse(events: AsyncIterator[tuple[str, str, str]]) -> AsyncIterator[ServerSentEvent]:
    async for name, event_id, data in events:
        yield ServerSentEvent(data=data, event=name, id=event_id or None)


async def _ndjson(events: AsyncIterator[tuple[str, str, str]]) -> AsyncIterator[bytes]:
    async for name, event_id, data in events:
        yield json.dumps({"event": name, "id": event_id, "data": json.loads(data)}).encode() + b"\n"

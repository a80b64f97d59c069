"""Turn an upload into a queued job: check every input, store it, then queue it; nothing remains if any step fails.

Checks run cheapest first, so a bad request costs little: JSON shape and depth, engine and options, prompt kinds
against the engine (before any file is decoded), a worker for the job's queue, then the video, then mask sizes
from their headers against the video, and only then the masks themselves.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vos.engine import Engine, check_engine_options, engine_class
from vos.errors import EngineError, PromptError, VideoError
from vos.masks import MAX_MASK_PIXELS, image_size, rle_size
from vos.prompts import ObjectPrompt, parse_prompts, validate_prompts
from vos.video import VideoInfo, open_video
from workers.core.maintenance import SendJob
from workers.core.models import Job, JobSpec, JobState, new_job_id
from workers.core.settings import ServiceSettings
from workers.core.storage import Storage, upload_scratch_dir
from workers.core.store import JobStore

CHUNK = 1 << 20
MAX_JSON_DEPTH = 16  # prompts need 5 levels; deeper documents are refused before anything walks them
PROMPT_KEYS = {"points": "points", "box": "box", "mask": "mask", "scribbles": "scribble", "text": "text",
               "reference": "reference"}  # JSON key -> prompt kind (ObjectPrompt.kinds)
SEEM_VARIANTS = ("focalt", "focall")


class UploadError(Exception):
    """A request the API refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class UploadedFile:
    """One multipart file part: its field name, file name and content (spooled to disk by Starlette)."""

    field: str
    filename: str | None
    file: BinaryIO


@dataclass
class JobRequest:
    video: UploadedFile
    prompts_json: str
    engine: str
    options_json: str
    overlay: bool
    extra_files: list[UploadedFile]


def create_job(request: JobRequest, settings: ServiceSettings, store: JobStore, storage: Storage,
               send_job: SendJob) -> Job:
    """Validate and store the upload, record the job and queue it. Blocking: run it in a worker thread."""
    engine_cls = available_engine_class(request.engine)
    options = validated_options(request.options_json, engine_cls)
    raw_prompts = _raw_prompts(request.prompts_json)
    check_kinds(raw_prompts, engine_cls)
    extension = video_container(request.video.filename, settings)
    queue = queue_for(request.engine, options, settings)
    _check_worker(store, queue, request.engine)
    job_id = new_job_id()
    try:
        video_name = f"video.{extension}"
        info = store_video(request.video.file, storage, job_id, video_name, settings)
        _check_mask_headers(raw_prompts, info, request.extra_files, settings.max_prompt_file_bytes)
        files = _read_extra_files(request.extra_files, settings.max_prompt_file_bytes)
        prompts = _prompts(raw_prompts, files, engine_cls)
        validate_prompts(prompts, info.width, info.height, info.num_frames)
        spec = JobSpec(video=video_name, prompts=raw_prompts, files=_store_files(storage, job_id, files),
                       engine=request.engine, options=options, overlay=request.overlay)
        storage.write_spec(job_id, spec)
        now = time.time()
        job = Job(id=job_id, state=JobState.QUEUED, engine=request.engine, queue=queue, width=info.width,
                  height=info.height, fps=info.fps, num_frames=info.num_frames, objects=len(prompts),
                  created_at=now, dispatched_at=now)
        store.create(job)
        send_job(job_id, queue)
    except BaseException:
        storage.remove_job(job_id)
        store.delete_records(job_id)
        raise
    return job


def queue_for(engine: str, options: Mapping[str, Any], settings: ServiceSettings) -> str:
    """The Celery queue of a job: GPU engines go to ``gpu`` unless asked to run on the CPU."""
    device = str(options.get("device") or "")
    if device.startswith("cuda") or (engine in settings.gpu_engines and device != "cpu"):
        return "gpu"
    return "cpu"


def _check_worker(store: JobStore, queue: str, engine: str) -> None:
    if store.live_workers()[queue] > 0:
        return
    hint = ' or pass options {"device": "cpu"} to run it on a CPU worker' if queue == "gpu" else ""
    raise UploadError(503, f"no worker serves the {queue!r} queue that {engine!r} jobs need, so the job would wait "
                           f"for ever; start a {queue} worker{hint}, then submit again")


def available_engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; an engine whose module this server lacks is a user error."""
    try:
        return engine_class(name)
    except ImportError as error:  # registered, but its module is not installed in this deployment
        raise EngineError(f"engine {name!r} is not available on this server ({error})") from error


def validated_options(options_json: str, engine_cls: type[Engine]) -> dict[str, Any]:
    """The `options` form field, parsed and checked against the engine's typed options."""
    options = parse_json(options_json, "options")
    if not isinstance(options, dict):
        raise EngineError("options must be a JSON object, e.g. {\"resolution\": 512}")
    if engine_cls.name == "seem":
        _check_seem_files(options)
    # Names, types and ranges; the engine itself (maybe loading weights) is built by a worker.
    return check_engine_options(engine_cls.name, options).model_dump(mode="json", exclude_unset=True)


def _check_seem_files(options: Mapping[str, Any]) -> None:
    """Only registry checkpoints or files inside the weights folder (checked lexically, no file is touched), and
    only variant names: a client must not make a worker probe or read its files."""
    from vos.errors import WeightsNotAllowedError
    from vos.seem.download import CHECKPOINTS, check_weights_location, find_checkpoint

    weights, variant = options.get("weights"), options.get("variant")
    if weights is not None and find_checkpoint(str(weights)) is None:
        try:
            check_weights_location(str(weights))
        except WeightsNotAllowedError:  # its message shows the folder's path: the client gets one without it
            raise EngineError(f"option weights={weights!r} is not allowed: give a checkpoint name "
                              f"({', '.join(CHECKPOINTS)}) or the name of a file in the server's weights folder"
                              ) from None
    if variant is not None and variant not in SEEM_VARIANTS:
        raise EngineError(f"option variant={variant!r} is not allowed: use one of {', '.join(SEEM_VARIANTS)}")


def parse_json(text: str, field: str) -> Any:
    """A form field's JSON; too deep a document is a user error, not a RecursionError."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PromptError(f"the {field!r} field is not valid JSON: {error}") from error
    except RecursionError:
        raise PromptError(f"the {field!r} field is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise PromptError(f"the {field!r} field is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return value


def _depth(value: Any) -> int:
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, level + 1) for child in children)
    return deepest


def _raw_prompts(prompts_json: str) -> list[dict[str, Any]]:
    raw = parse_json(prompts_json, "prompts")
    if not isinstance(raw, list):
        raise PromptError("prompts must be a JSON list of objects, e.g. [{\"object_id\": 1, \"points\": [...]}]")
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PromptError(f"prompt #{index} must be a JSON object, got {type(item).__name__}")
    return raw


def check_kinds(raw: list[dict[str, Any]], engine_cls: type[Engine]) -> None:
    """Refuse prompt kinds the engine cannot use before any mask or image is decoded."""
    for index, item in enumerate(raw):
        kinds = {kind for key, kind in PROMPT_KEYS.items() if item.get(key) not in (None, [], "")}
        unsupported = kinds - engine_cls.supported_prompts
        if unsupported:
            raise PromptError(f"the {engine_cls.name!r} engine cannot use {', '.join(sorted(unsupported))} prompts "
                              f"(prompt #{index}); {engine_cls.unsupported_hint}")


def _prompts(raw: list[dict[str, Any]], files: Mapping[str, bytes], engine_cls: type[Engine]) -> list[ObjectPrompt]:
    def load(name: str) -> bytes:
        if name not in files:
            raise PromptError(f"prompt refers to file {name!r}, but no uploaded part has that name "
                              f"(uploaded: {', '.join(sorted(files)) or 'none'})")
        return files[name]

    prompts = parse_prompts(raw, load)
    engine_cls.check_prompts(prompts)
    return prompts


def _check_mask_headers(raw: list[dict[str, Any]], info: VideoInfo, parts: list[UploadedFile], limit: int) -> None:
    """Mask sizes from RLE fields and image headers, against the video, before any mask is decoded."""
    by_name = {}
    for part in parts:
        for name in (part.field, part.filename):
            if name:
                by_name[name] = part
    for index, item in enumerate(raw):
        for what, spec, must_match in _mask_specs(item):
            size = _encoded_size(spec, by_name, limit, what)
            if size is None:
                continue
            height, width = size
            if must_match and (height, width) != (info.height, info.width):
                raise PromptError(f"prompt #{index}: {what} is {width}x{height}, expected {info.width}x{info.height} "
                                  "(the video's size)")


def _mask_specs(item: Mapping[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """(description, encoded mask or image, whether it must have the video's size) of one raw prompt."""
    yield "mask", item.get("mask"), True
    for number, scribble in enumerate(item.get("scribbles") or []):
        if isinstance(scribble, Mapping):
            yield f"scribble #{number} mask", scribble.get("mask"), True
    reference = item.get("reference")
    if isinstance(reference, Mapping):
        yield "reference image", reference.get("image"), False
        yield "reference mask", reference.get("mask"), False


def _encoded_size(spec: Any, parts: Mapping[str, UploadedFile], limit: int, what: str) -> tuple[int, int] | None:
    """(height, width) of an encoded mask or image, from its RLE size or image header; None if not given."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        return None  # parse_prompts names the problem
    (kind, value), = spec.items()
    if kind == "rle":
        return rle_size(value)
    if kind in ("png_base64", "jpeg_base64") and isinstance(value, str):
        try:  # the text is bounded by the form field limit; only the image header is parsed below
            data = base64.b64decode(value, validate=True)
        except ValueError:
            return None  # parse_prompts reports the invalid base64
        width, height = image_size(data, what)
        return height, width
    if kind == "file" and isinstance(value, str) and value in parts:
        part = parts[value]
        head = part.file.read(min(limit, 1 << 16))
        part.file.seek(0)
        width, height = image_size(head, what)
        return height, width
    return None


def _read_extra_files(parts: list[UploadedFile], limit: int) -> dict[str, bytes]:
    """Mask and reference images, addressable by field name and by file name."""
    files: dict[str, bytes] = {}
    for part in parts:
        data = part.file.read(limit + 1)
        if len(data) > limit:
            raise UploadError(413, f"file part {part.filename or part.field!r} is larger than {limit} bytes")
        if part.field != "files":
            files[part.field] = data
        if part.filename:
            files[part.filename] = data
    return files


def video_container(filename: str | None, settings: ServiceSettings) -> str:
    """The upload's container, from its file name; one the service does not take is a user error."""
    extension = Path(filename or "").suffix.lower().lstrip(".")
    if extension not in settings.allowed_containers:
        raise UploadError(415, f"video container {extension or '(no file extension)'!r} is not accepted; "
                               f"allowed: {', '.join(sorted(settings.allowed_containers))}")
    return extension


def store_video(source: BinaryIO, storage: Storage, job_id: str, name: str, settings: ServiceSettings) -> VideoInfo:
    """Copy the upload to storage in chunks and probe it. Local storage gets it directly (a job folder without a
    record is removed by the reaper if this process dies); remote storage goes through a local scratch copy,
    named after this process so the next API start removes it if this one dies."""
    if storage.is_local:
        target = Path(storage.path(job_id, "input", name))
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_limited(source, target, settings.max_upload_bytes)
        return probe_video(target, settings)
    with upload_scratch_dir() as tmp:
        local = Path(tmp) / name
        _copy_limited(source, local, settings.max_upload_bytes)
        info = probe_video(local, settings)
        storage.put(str(local), storage.path(job_id, "input", name))
    return info


def _copy_limited(source: BinaryIO, target: Path, limit: int) -> None:
    copied = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise UploadError(413, f"the video is larger than the limit of {limit} bytes")
            out.write(chunk)


def probe_video(path: Path, settings: ServiceSettings) -> VideoInfo:
    """Open a stored upload and check it against the video limits."""
    try:
        with open_video(path) as video:
            info = video.info
            _check_size(info, settings)
            _check_decodable(video)
    except VideoError as error:  # name the client's file, not our path
        raise VideoError(str(error).replace(str(path), "the uploaded video").replace(path.name, "the uploaded video")
                         ) from error
    if info.num_frames > settings.max_frames:
        raise UploadError(422, f"the video has {info.num_frames} frames; the limit is {settings.max_frames}")
    duration = info.num_frames / info.fps if info.fps > 0 else 0.0
    if duration > settings.max_duration_s:
        raise UploadError(422, f"the video lasts {duration:.1f} s; the limit is {settings.max_duration_s:g} s")
    return info


def _check_size(info: VideoInfo, settings: ServiceSettings) -> None:
    if min(info.width, info.height) < settings.min_video_side:
        raise UploadError(422, f"the video is {info.width}x{info.height}; both sides must be at least "
                               f"{settings.min_video_side} pixels")
    if info.width * info.height > min(settings.max_video_pixels, MAX_MASK_PIXELS):
        raise UploadError(422, f"the video is {info.width}x{info.height}; the limit is "
                               f"{settings.max_video_pixels} pixels per frame (e.g. 3840x2160)")


def _check_decodable(video: Any) -> None:
    """Decode the first frame, so a file with a valid header but no decodable picture is refused now."""
    try:
        next(iter(video))
    except StopIteration as error:
        raise VideoError(f"{video.path.name} contains no decodable frame") from error


def _store_files(storage: Storage, job_id: str, files: Mapping[str, bytes]) -> dict[str, str]:
    names: dict[str, str] = {}
    for number, (name, data) in enumerate(files.items()):
        names[name] = f"files/{number}"
        storage.write_bytes(storage.path(job_id, "input", names[name]), data)
    return names

"""Turn an upload into a queued job: check every input, store it, then queue it; nothing remains if any step fails."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from vos.engine import Engine, check_engine_options, engine_class
from vos.errors import EngineError, PromptError, VideoError
from vos.prompts import ObjectPrompt, parse_prompts, validate_prompts
from vos.video import VideoInfo, open_video
from workers.jobs import INPUT_SPEC, JobStore, Storage, new_job_id, queue_for
from workers.settings import ServiceSettings

CHUNK = 1 << 20


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


@dataclass(frozen=True)
class CreatedJob:
    job_id: str
    queue: str


def create_job(request: JobRequest, settings: ServiceSettings, store: JobStore, storage: Storage,
               send_task: Any) -> CreatedJob:
    """Validate and store the upload, record the job and queue it. Blocking: run it in a worker thread."""
    engine_cls = _engine_class(request.engine)
    options = _options(request.options_json, engine_cls)
    files = _read_extra_files(request.extra_files, settings.max_prompt_file_bytes)
    prompts = _prompts(request.prompts_json, files, engine_cls)
    extension = _container(request.video.filename, settings)
    job_id = new_job_id()
    try:
        info = _store_video(request.video.file, storage, job_id, f"video.{extension}", settings)
        validate_prompts(prompts, info.width, info.height, info.num_frames)
        spec = _store_inputs(storage, job_id, f"video.{extension}", request, options, files)
        queue = queue_for(request.engine, options, settings)
        store.create(job_id, {"engine": request.engine, "queue": queue, "width": info.width, "height": info.height,
                              "fps": info.fps, "num_frames": info.num_frames, "objects": len(spec["prompts"])})
        send_task("workers.tasks.run_job", args=[job_id], queue=queue)
    except BaseException:
        storage.remove_job(job_id)
        store.delete_records(job_id)
        raise
    return CreatedJob(job_id, queue)


def _engine_class(name: str) -> type[Engine]:
    try:
        return engine_class(name)
    except ImportError as error:  # registered, but its module is not installed in this deployment
        raise EngineError(f"engine {name!r} is not available on this server ({error})") from error


def _options(options_json: str, engine_cls: type[Engine]) -> dict[str, Any]:
    options = _json(options_json, "options")
    if not isinstance(options, dict):
        raise EngineError("options must be a JSON object, e.g. {\"resolution\": 512}")
    check_engine_options(engine_cls.name, options)  # the engine itself (maybe loading weights) is built by a worker
    return options


def _prompts(prompts_json: str, files: Mapping[str, bytes], engine_cls: type[Engine]) -> list[ObjectPrompt]:
    raw = _json(prompts_json, "prompts")
    if not isinstance(raw, list):
        raise PromptError("prompts must be a JSON list of objects, e.g. [{\"object_id\": 1, \"points\": [...]}]")

    def load(name: str) -> bytes:
        if name not in files:
            raise PromptError(f"prompt refers to file {name!r}, but no uploaded part has that name "
                              f"(uploaded: {', '.join(sorted(files)) or 'none'})")
        return files[name]

    prompts = parse_prompts(raw, load)
    engine_cls.check_prompts(prompts)
    return prompts


def _json(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PromptError(f"the {field!r} field is not valid JSON: {error}") from error


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


def _container(filename: str | None, settings: ServiceSettings) -> str:
    extension = Path(filename or "").suffix.lower().lstrip(".")
    if extension not in settings.allowed_containers:
        raise UploadError(415, f"video container {extension or '(no file extension)'!r} is not accepted; "
                               f"allowed: {', '.join(sorted(settings.allowed_containers))}")
    return extension


def _store_video(source: BinaryIO, storage: Storage, job_id: str, name: str, settings: ServiceSettings) -> VideoInfo:
    """Copy the upload to storage in chunks and probe it; decoders need a local file, so remote storage gets a
    local temporary copy first."""
    with tempfile.TemporaryDirectory(prefix="vos-upload-") as tmp:
        local = Path(tmp) / name
        _copy_limited(source, local, settings.max_upload_bytes)
        try:
            info = _probe(local, settings)
        except VideoError as error:  # name the client's file, not our temporary path
            raise VideoError(str(error).replace(str(local), "the uploaded video")) from error
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


def _probe(path: Path, settings: ServiceSettings) -> VideoInfo:
    with open_video(path) as video:
        info = video.info
        _check_decodable(video)
    if info.num_frames > settings.max_frames:
        raise UploadError(422, f"the video has {info.num_frames} frames; the limit is {settings.max_frames}")
    duration = info.num_frames / info.fps if info.fps > 0 else 0.0
    if duration > settings.max_duration_s:
        raise UploadError(422, f"the video lasts {duration:.1f} s; the limit is {settings.max_duration_s:g} s")
    return info


def _check_decodable(video: Any) -> None:
    """Decode the first frame, so a file with a valid header but no decodable picture is refused now."""
    try:
        next(iter(video))
    except StopIteration as error:
        raise VideoError(f"{video.path.name} contains no decodable frame") from error


def _store_inputs(storage: Storage, job_id: str, video_name: str, request: JobRequest, options: dict[str, Any],
                  files: Mapping[str, bytes]) -> dict[str, Any]:
    names: dict[str, str] = {}
    for number, (name, data) in enumerate(files.items()):
        names[name] = f"files/{number}"
        storage.write_bytes(storage.path(job_id, "input", names[name]), data)
    spec = {"video": video_name, "prompts": json.loads(request.prompts_json), "files": names,
            "engine": request.engine, "options": options, "overlay": request.overlay}
    storage.write_bytes(storage.path(job_id, "input", INPUT_SPEC), json.dumps(spec).encode())
    return spec

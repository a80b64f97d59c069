"""Celery tasks: run one tracking job, and delete expired jobs. Thin adapters over :func:`vos.tracker.track`."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from vos.engine import Engine, create_engine
from vos.errors import PromptError, VosError
from vos.outputs import frame_record
from vos.prompts import ObjectPrompt, parse_prompts
from vos.tracker import TrackingCancelled, track
from vos.video import open_video
from workers.app import app
from workers.artifacts import ArtifactWriter
from workers.jobs import INPUT_SPEC, JobState, JobStore, LeaseLost, Storage, cleanup_expired
from workers.settings import get_settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _store() -> JobStore:
    return JobStore(get_settings())


@lru_cache(maxsize=1)
def _storage() -> Storage:
    return Storage(get_settings().storage_url)


@lru_cache(maxsize=4)
def cached_engine(name: str, options_json: str) -> Engine:
    """One engine per worker process and engine configuration: model weights load once, not per job."""
    return create_engine(name, **json.loads(options_json))


@app.task(name="workers.tasks.run_job", bind=True, max_retries=None)
def run_job(self: Any, job_id: str) -> None:
    store = _store()
    job = store.get(job_id)
    if job is None or JobState(job["state"]).terminal:
        return  # cancelled, deleted or already done: a redelivered message has nothing left to do
    token = store.acquire_lease(job_id)
    if token is None:  # another worker holds a live lease; come back when it would have expired
        raise self.retry(countdown=store.settings.lease_s)
    try:
        JobRunner(store, _storage(), job, token).run()
    finally:
        store.release_lease(job_id, token)


@app.task(name="workers.tasks.cleanup")
def cleanup() -> list[str]:
    return cleanup_expired(_store(), _storage())


class JobRunner:
    """Runs one job under a lease: tracks, persists and publishes each frame, then uploads the result files."""

    def __init__(self, store: JobStore, storage: Storage, job: dict[str, str], token: str) -> None:
        self.store, self.storage, self.job, self.token = store, storage, job, token
        self.job_id = job["id"]
        self.compute_s = 0.0
        self.deadline = time.monotonic() + store.settings.task_soft_time_limit_s

    def run(self) -> None:
        attempts = int(self.job.get("attempts", 0)) + 1
        if not self.store.transition(self.job_id, JobState.RUNNING, (JobState.QUEUED, JobState.RUNNING),
                                     started_at=time.time(), attempts=attempts):
            return
        try:
            self._track_and_upload()
        except LeaseLost as stop:
            log.info("job %s stopped: %s", self.job_id, stop)
            if (self.store.get(self.job_id) or {}).get("state") == JobState.CANCELLED.value:
                self.storage.remove_job(self.job_id)  # the API removed them too, but frames may have landed since
        except TrackingCancelled:
            self._fail(f"the job exceeded the time limit of {self.store.settings.task_soft_time_limit_s:g} s")
        except SoftTimeLimitExceeded:
            self._fail(f"the job exceeded the time limit of {self.store.settings.task_soft_time_limit_s:g} s")
        except VosError as error:
            self._fail(str(error))
        except Exception as error:
            self._fail(f"internal error while tracking ({type(error).__name__})")
            raise

    def _track_and_upload(self) -> None:
        spec = json.loads(self.storage.read_bytes(self.storage.path(self.job_id, "input", INPUT_SPEC)))
        prompts = parse_prompts(spec["prompts"], self._file_loader(spec["files"]))
        engine = cached_engine(spec["engine"], json.dumps(spec["options"], sort_keys=True))
        with tempfile.TemporaryDirectory(prefix="vos-job-") as tmp:
            video_path = self._local_video(spec["video"], tmp)
            with open_video(video_path) as video, ArtifactWriter(tmp, video.info, overlay=spec.get("overlay", True)) as out:
                self._track(video, engine, prompts, out)
            out.upload(self.storage, self.job_id)
        self.store.transition(self.job_id, JobState.SUCCEEDED, (JobState.RUNNING,), finished_at=time.time(),
                              compute_s=self.compute_s)

    def _track(self, video: Any, engine: Engine, prompts: list[ObjectPrompt], out: ArtifactWriter) -> None:
        for result in track(video, engine, prompts, should_stop=self._should_stop):
            record = json.dumps(frame_record(result))
            # Persist before publishing: a reader that finds a frame trimmed from the stream reads it from storage.
            self.storage.write_bytes(self.storage.frame_path(self.job_id, result.index), record.encode())
            self.store.publish_frame(self.job_id, self.token, result.index, record)
            out.write(result, record)
            self.compute_s += result.seconds

    def _should_stop(self) -> bool:
        self.store.heartbeat(self.job_id, self.token, self.compute_s)  # raises LeaseLost when cancelled
        return time.monotonic() > self.deadline

    def _fail(self, message: str) -> None:
        log.warning("job %s failed: %s", self.job_id, message)
        self.store.transition(self.job_id, JobState.FAILED, (JobState.RUNNING,), finished_at=time.time(),
                              error=message, compute_s=self.compute_s)

    def _local_video(self, name: str, tmp: str) -> str:
        remote = self.storage.path(self.job_id, "input", name)
        if self.storage.is_local:
            return remote
        local = str(Path(tmp) / name)
        self.storage.fs.get_file(remote, local)
        return local

    def _file_loader(self, files: dict[str, str]) -> Any:
        def load(name: str) -> bytes:
            if name not in files:
                raise PromptError(f"prompt refers to file {name!r}, which was not uploaded")
            return self.storage.read_bytes(self.storage.path(self.job_id, "input", files[name]))

        return load

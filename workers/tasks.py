"""The Celery task that runs one tracking job: a thin adapter over :func:`vos.tracker.track`.

A job runs under a lease renewed by a thread (:class:`LeaseKeeper`), independent of how long a frame takes.
Every way out of :meth:`JobRunner.run` leaves the job in a final state, or running without a lease when Redis
itself is unreachable; the reaper (:mod:`workers.core.maintenance`) re-queues such jobs once Redis answers.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from vos.engine import Engine
from vos.errors import CheckpointError, DownloadError, PromptError, VosError
from vos.outputs import frame_record
from vos.prompts import ObjectPrompt, parse_prompts
from vos.tracker import TrackingCancelled, track
from vos.video import open_video
from workers.app import app, worker_name
from workers.core.models import Job, JobSpec, JobState
from workers.core.settings import get_settings
from workers.core.storage import Storage
from workers.core.store import JobStore, LeaseLost
from workers.engines import shared_engine
from workers.results import BackgroundResults

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _store() -> JobStore:
    return JobStore(get_settings())


@lru_cache(maxsize=1)
def _storage() -> Storage:
    return Storage(get_settings().storage_url)


@app.task(name="workers.tasks.run_job")
def run_job(job_id: str) -> None:
    store, storage = _store(), _storage()
    job = store.get(job_id)
    if job is None:  # the record vanished (Redis lost its data, or retention ran): nothing may stay behind
        storage.remove_job(job_id)
        return
    if job.state.terminal:
        return  # cancelled or already done: a redelivered message has nothing left to do
    token = store.acquire_lease(job_id)
    if token is None:
        return  # a live worker runs it; if that worker dies, the reaper queues the job again
    runner = JobRunner(store, storage, job, token)
    try:
        with LeaseKeeper(store, job_id, token, lambda: runner.compute_s) as lease:
            runner.run(lease)
    finally:
        try:
            store.release_lease(job_id, token)
        except redis.RedisError:
            log.warning("could not release the lease of job %s; it expires by itself", job_id)


class LeaseKeeper:
    """Renews a job's lease from a thread every ``lease_s / 3`` seconds, however long a frame takes.

    A Redis error is logged and the next renewal tries again (the lease is taken back if it expired meanwhile
    and nobody else took the job); :attr:`lost` is set once the job was cancelled, taken over or vanished.
    """

    def __init__(self, store: JobStore, job_id: str, token: str, compute_s: Callable[[], float]) -> None:
        self.store, self.job_id, self.token, self.compute_s = store, job_id, token, compute_s
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.store.settings.renew_interval_s):
            try:
                self.store.renew_lease(self.job_id, self.token, self.compute_s())
            except LeaseLost as lost:
                self.lost = lost
                return
            except redis.RedisError as error:
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, type(error).__name__)

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class JobRunner:
    """Runs one job under a lease: tracks, persists and publishes each frame, then uploads the result files."""

    def __init__(self, store: JobStore, storage: Storage, job: Job, token: str) -> None:
        self.store, self.storage, self.job, self.token = store, storage, job, token
        self.job_id = job.id
        self.compute_s = 0.0
        self.limit_s = store.settings.task_soft_time_limit_s
        self.deadline = time.monotonic() + self.limit_s

    def run(self, lease: LeaseKeeper) -> None:
        if not self.store.transition(self.job_id, JobState.RUNNING,
                                     (JobState.QUEUED, JobState.RETRYING, JobState.RUNNING),
                                     started_at=time.time(), attempts=self.job.attempts + 1, worker=worker_name()):
            return
        try:
            self._track_and_upload(lease)
        except LeaseLost as stop:
            self._stopped(stop)
        except (TrackingCancelled, SoftTimeLimitExceeded):
            self._fail(f"the job exceeded the time limit of {self.limit_s:g} s")
        except (CheckpointError, DownloadError) as error:  # the server's model files: never the client's fault
            self._fail(f"the server could not load the engine's model (a server fault): {error}")
        except VosError as error:
            self._fail(str(error))
        except redis.RedisError as error:
            # Not the job's fault, and its state cannot be recorded now: it stays running without a lease, and the
            # reaper queues it again once Redis answers.
            log.error("job %s interrupted: Redis unreachable (%s)", self.job_id, type(error).__name__)
        except Exception as error:
            self._fail(f"the engine failed with an internal error ({type(error).__name__}); this is a fault of the "
                       "service, not of the request")
            raise

    def _stopped(self, stop: LeaseLost) -> None:
        log.info("job %s stopped: %s", self.job_id, stop)
        job = self.store.get(self.job_id)
        if stop.vanished or job is None or job.state is JobState.CANCELLED:
            self.storage.remove_job(self.job_id)  # frames may have landed since the API removed the files

    def _track_and_upload(self, lease: LeaseKeeper) -> None:
        spec = self.storage.read_spec(self.job_id)
        prompts = parse_prompts(spec.prompts, self._file_loader(spec))
        engine = shared_engine(spec.engine, spec.options)
        with tempfile.TemporaryDirectory(prefix="vos-job-") as tmp:
            video_path = self._local_video(spec.video, tmp)
            with open_video(video_path) as video, BackgroundResults(tmp, video.info, overlay=spec.overlay) as out:
                self._track(video, engine, prompts, out, lease)
            out.upload(self.storage, self.job_id)
        lease.check()
        self.store.transition(self.job_id, JobState.SUCCEEDED, (JobState.RUNNING,), finished_at=time.time(),
                              compute_s=self.compute_s)

    def _track(self, video: Any, engine: Engine, prompts: list[ObjectPrompt], out: BackgroundResults,
               lease: LeaseKeeper) -> None:
        def should_stop() -> bool:
            lease.check()  # raises LeaseLost when cancelled, taken over or vanished
            return time.monotonic() > self.deadline

        for result in track(video, engine, prompts, should_stop=should_stop):
            record = json.dumps(frame_record(result))
            # Persist before publishing: a reader that finds a frame trimmed from the stream reads it from storage.
            self.storage.write_bytes(self.storage.frame_path(self.job_id, result.index), record.encode())
            self.store.publish_frame(self.job_id, self.token, result.index, record, result.revision)
            out.write(result)
            self.compute_s += result.seconds

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

    def _file_loader(self, spec: JobSpec) -> Callable[[str], bytes]:
        def load(name: str) -> bytes:
            if name not in spec.files:
                raise PromptError(f"prompt refers to file {name!r}, which was not uploaded")
            return self.storage.read_bytes(self.storage.path(self.job_id, "input", spec.files[name]))

        return load

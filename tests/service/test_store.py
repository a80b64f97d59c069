"""The job store's scripts on real Redis: leases, re-queueing, frame publishing with revisions, vanished records."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from api.streaming import FrameEvent, job_events
from workers.core.maintenance import LOST_WORKER, reap
from workers.core.models import Job, JobState, new_job_id
from workers.core.storage import Storage
from workers.core.store import GAVE_UP, NOT_LOST, REQUEUED, AsyncJobStore, JobStore, LeaseLost


@pytest.fixture
def quiet(settings, tmp_path) -> JobStore:
    """A store under a key prefix of its own, where no worker (and so no reaper) runs."""
    return JobStore(settings.model_copy(update={"key_prefix": f"{settings.key_prefix}quiet-{new_job_id()}:",
                                                "storage_url": str(tmp_path / "storage")}))


def new_job(store: JobStore) -> str:
    job = Job(id=new_job_id(), state=JobState.QUEUED, engine="static", queue="cpu", width=4, height=4, fps=1.0,
              num_frames=5, objects=1, created_at=time.time())
    store.create(job)
    return job.id


def start(store: JobStore, job_id: str) -> str:
    token = store.acquire_lease(job_id)
    assert token is not None
    attempts = store.get(job_id).attempts + 1
    assert store.transition(job_id, JobState.RUNNING, (JobState.QUEUED, JobState.RETRYING), attempts=attempts)
    return token


def test_a_running_job_without_lease_is_requeued_then_given_up(quiet: JobStore):
    job_id = new_job(quiet)
    token = start(quiet, job_id)
    assert quiet.requeue_unleased(job_id, LOST_WORKER) == NOT_LOST  # its worker holds the lease
    quiet.redis.delete(quiet.keys.lease(job_id))  # the worker died: its lease expired
    assert quiet.requeue_unleased(job_id, LOST_WORKER) == REQUEUED
    job = quiet.get(job_id)
    assert job.state is JobState.RETRYING and job.retry_reason == LOST_WORKER
    assert job_id in quiet.ids_in_state(JobState.RETRYING) and job_id not in quiet.ids_in_state(JobState.RUNNING)
    for _ in range(quiet.settings.max_attempts - 1):
        start(quiet, job_id)
        quiet.redis.delete(quiet.keys.lease(job_id))
        outcome = quiet.requeue_unleased(job_id, LOST_WORKER)
    assert outcome == GAVE_UP
    failed = quiet.get(job_id)
    assert failed.state is JobState.FAILED and f"interrupted {quiet.settings.max_attempts} times" in failed.error
    end = quiet.redis.xrange(quiet.keys.stream(job_id))[-1][1]
    assert end[b"end"] == b"failed"
    assert token  # the first run's token is simply stale now


def test_renewal_takes_back_an_expired_lease_unless_another_worker_took_the_job(quiet: JobStore):
    job_id = new_job(quiet)
    token = start(quiet, job_id)
    quiet.redis.delete(quiet.keys.lease(job_id))  # Redis was unreachable for longer than the lease
    quiet.requeue_unleased(job_id, LOST_WORKER)  # and the reaper marked the job for retry meanwhile
    quiet.renew_lease(job_id, token, 1.5)  # the worker is back first: it keeps the job
    assert quiet.get(job_id).state is JobState.RUNNING and quiet.redis.get(quiet.keys.lease(job_id)) == token.encode()
    quiet.redis.set(quiet.keys.lease(job_id), "another-worker")
    with pytest.raises(LeaseLost, match="passed to another worker"):
        quiet.renew_lease(job_id, token, 2.0)
    quiet.delete_records(job_id)
    with pytest.raises(LeaseLost, match="vanished") as lost:
        quiet.renew_lease(job_id, token, 2.0)
    assert lost.value.vanished


def test_frames_are_published_once_and_revisions_replace_them(quiet: JobStore):
    job_id = new_job(quiet)
    token = start(quiet, job_id)
    assert quiet.publish_frame(job_id, token, 0, '{"frame": 0, "v": 0}')
    assert quiet.publish_frame(job_id, token, 1, '{"frame": 1, "v": 0}')
    assert not quiet.publish_frame(job_id, token, 0, '{"frame": 0, "v": 0}')  # a re-run recomputes frame 0
    assert quiet.publish_frame(job_id, token, 0, '{"frame": 0, "v": 1}', revision=1)
    assert not quiet.publish_frame(job_id, token, 0, '{"frame": 0, "v": 1}', revision=1)  # that revision again
    assert quiet.publish_frame(job_id, token, 2, '{"frame": 2, "v": 0}')
    quiet.transition(job_id, JobState.SUCCEEDED, (JobState.RUNNING,))
    assert quiet.get(job_id).frames_done == 3

    async def read(after: int) -> list[FrameEvent]:
        astore = AsyncJobStore(quiet.settings, 1.0)
        try:
            return [event async for event in job_events(astore, Storage(quiet.settings.storage_url), job_id, after)]
        finally:
            await astore.close()

    events = asyncio.run(read(-1))
    frames = [(e.index, json.loads(e.data)["v"]) for e in events if isinstance(e, FrameEvent)]
    assert frames == [(0, 0), (1, 0), (0, 1), (2, 0)]  # the revision of frame 0 arrives after frame 1, in order
    assert events[-1].state == "succeeded"
    resumed = asyncio.run(read(0))  # a client that already had frame 0 gets no stale revision of it
    assert [e.index for e in resumed if isinstance(e, FrameEvent)] == [1, 2]


def test_reaper_requeues_lost_jobs_and_removes_orphan_folders(quiet: JobStore, tmp_path):
    storage = Storage(quiet.settings.storage_url)
    job_id = new_job(quiet)
    start(quiet, job_id)
    quiet.redis.delete(quiet.keys.lease(job_id))
    orphan = new_job_id()
    storage.write_bytes(storage.path(orphan, "input", "video.mp4"), b"left by a dead API")
    sent: list[tuple[str, str]] = []
    report = reap(quiet, storage, lambda job, queue: sent.append((job, queue)))
    assert sent == [(job_id, "cpu")] and report.requeued == [job_id] and report.orphans_removed == []
    later = reap(quiet, storage, lambda *job: None, now=time.time() + quiet.settings.orphan_grace_s + 1)
    assert orphan in later.orphans_removed and not storage.exists(storage.path(orphan))


def test_a_job_waiting_on_a_queue_without_workers_is_failed_with_a_message(quiet: JobStore):
    job_id = new_job(quiet)  # on the cpu queue; no worker heartbeats under this prefix
    sent: list[tuple[str, str]] = []
    storage = Storage(quiet.settings.storage_url)
    assert reap(quiet, storage, lambda *job: sent.append(job)).unserved == []  # just queued: it may yet be served
    later = time.time() + quiet.settings.unserved_queue_s + 1
    assert reap(quiet, storage, lambda *job: sent.append(job), now=later).unserved == [job_id]
    failed = quiet.get(job_id)
    assert failed.state is JobState.FAILED and "no worker served the 'cpu' queue" in failed.error
    quiet.worker_alive("somewhere:1", ("cpu",))
    other = new_job(quiet)
    assert reap(quiet, storage, lambda *job: sent.append(job), now=later).unserved == []  # served: it waits
    assert quiet.get(other).state is JobState.QUEUED


def test_a_waiting_job_whose_task_was_lost_is_queued_again(quiet: JobStore):
    job_id = new_job(quiet)  # recorded, but its task never reached the queue (the API died in between)
    quiet.worker_alive("somewhere:1", ("cpu",))
    storage = Storage(quiet.settings.storage_url)
    sent: list[tuple[str, str]] = []
    assert reap(quiet, storage, lambda *job: sent.append(job)).redispatched == []  # sent just now: wait
    later = time.time() + quiet.settings.redispatch_after_s + 1
    quiet.redis.lpush(quiet.keys.queue("cpu"), "another task")
    assert reap(quiet, storage, lambda *job: sent.append(job), now=later).redispatched == []  # may be in the queue
    quiet.redis.delete(quiet.keys.queue("cpu"))
    assert reap(quiet, storage, lambda *job: sent.append(job), now=later).redispatched == [job_id]
    assert sent == [(job_id, "cpu")] and quiet.get(job_id).dispatched_at == later
    assert reap(quiet, storage, lambda *job: sent.append(job), now=later + 1).redispatched == []  # once per period

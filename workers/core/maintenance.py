"""Periodic upkeep run by the workers: re-queue jobs of lost workers, remove orphan files, delete expired jobs.

Every worker runs :func:`reap` every ``reaper_interval_s`` seconds and :func:`cleanup_expired` every
``cleanup_interval_s`` (Redis locks let one of them do each per interval), so recovery does not wait for the
broker's visibility timeout and neither needs an extra process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.core.models import JobState
from workers.core.storage import Storage
from workers.core.store import GAVE_UP, REQUEUED, JobStore

log = logging.getLogger(__name__)

LOST_WORKER = "its worker stopped renewing the job's lease: the worker was lost or could not reach Redis"
SendJob = Callable[[str, str], None]  # (job id, queue): put the job's task on the queue


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)


def reap(store: JobStore, storage: Storage, send_job: SendJob, now: float | None = None) -> ReapReport:
    """Re-queue running jobs whose lease expired (their worker died), and remove job folders without a record."""
    report = ReapReport()
    for job_id in store.ids_in_state(JobState.RUNNING):
        outcome = store.requeue_unleased(job_id, LOST_WORKER)
        if outcome == REQUEUED:
            job = store.get(job_id)
            if job is not None:
                send_job(job_id, job.queue)
                report.requeued.append(job_id)
                log.warning("job %s re-queued: %s", job_id, LOST_WORKER)
        elif outcome == GAVE_UP:
            report.failed.append(job_id)
    report.unserved = fail_unserved(store, now)
    report.redispatched = redispatch_lost(store, send_job, now)
    report.orphans_removed = remove_orphans(store, storage, now)
    return report


def fail_unserved(store: JobStore, now: float | None = None) -> list[str]:
    """Fail waiting jobs whose queue has had no worker for ``unserved_queue_s`` (they would wait for ever)."""
    now = time.time() if now is None else now
    live = store.live_workers()
    failed = []
    for state in (JobState.QUEUED, JobState.RETRYING):
        for job_id in store.ids_in_state(state):
            job = store.get(job_id)
            if job is None or live.get(job.queue, 0) or now - job.created_at < store.settings.unserved_queue_s:
                continue
            message = (f"no worker served the {job.queue!r} queue for {store.settings.unserved_queue_s:g} s; "
                       f"start a {job.queue} worker and submit the job again")
            if store.transition(job_id, JobState.FAILED, (state,), finished_at=now, error=message):
                failed.append(job_id)
    return failed


def redispatch_lost(store: JobStore, send_job: SendJob, now: float | None = None) -> list[str]:
    """Queue again the waiting jobs whose task is gone: their queue is empty, yet they have waited for
    ``redispatch_after_s`` since their task was sent (the API died right after recording the job, Redis lost the
    message, or a worker took it while Redis was unreachable). A duplicate task is harmless: it finds the job
    running under another worker's lease, or finished, and ends."""
    now = time.time() if now is None else now
    resent = []
    for state in (JobState.QUEUED, JobState.RETRYING):
        for job_id in store.ids_in_state(state):
            job = store.get(job_id)
            if job is None or now - (job.dispatched_at or job.created_at) < store.settings.redispatch_after_s:
                continue
            if store.queue_depth(job.queue):
                continue
            if store.transition(job_id, state, (state,), dispatched_at=now):
                send_job(job_id, job.queue)
                resent.append(job_id)
                log.warning("job %s queued again: its task was lost", job_id)
    return resent


def remove_orphans(store: JobStore, storage: Storage, now: float | None = None) -> list[str]:
    """Job folders with no record (the API died mid-upload, or Redis lost the record) older than the grace period."""
    cutoff = (time.time() if now is None else now) - store.settings.orphan_grace_s
    removed = []
    for job_id in storage.job_ids():
        if not store.exists(job_id) and storage.modified(job_id) < cutoff:
            storage.remove_job(job_id)
            removed.append(job_id)
    return removed


def cleanup_expired(store: JobStore, storage: Storage, now: float | None = None) -> list[str]:
    """Delete jobs that finished more than the retention period ago; returns their ids."""
    now = time.time() if now is None else now
    expired = store.finished_before(now - store.settings.retention_s)
    for job_id in expired:
        storage.remove_job(job_id)
        store.delete_records(job_id)
    return expired

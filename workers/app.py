"""The Celery application, configured from ``VOS_*`` environment variables, and the worker's upkeep thread.

Run a worker with ``celery -A workers.app worker --pool solo -c 1 -Q cpu`` (or ``-Q gpu`` on a GPU machine).
Tasks are acknowledged late; a job is owned by the worker holding its lease in Redis, renewed from a thread
(see :mod:`workers.tasks`). Each worker also runs an upkeep thread: a heartbeat per queue it serves (the API's
readiness and submission checks read it), and the reaper that re-queues jobs of lost workers within seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from kombu import Queue

from workers.core.maintenance import cleanup_expired, reap
from workers.core.settings import QUEUES, ServiceSettings, get_settings
from workers.core.storage import Storage
from workers.core.store import JobStore

log = logging.getLogger(__name__)
RUN_JOB = "workers.tasks.run_job"
STOP_WAIT_S = 2.0


def create_celery(settings: ServiceSettings) -> Celery:
    # Task modules; workers.sessions also starts the worker's session server (interactive sessions).
    app = Celery("seem_vos", broker=settings.redis_url, backend=settings.redis_url,
                 include=["workers.tasks", "workers.sessions"])
    prefix = f"{settings.key_prefix}celery:"
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # job state lives in the job's Redis hash, not in Celery results
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_queues=tuple(Queue(name) for name in QUEUES),
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a Redis restart must not end the worker
        broker_transport_options={
            "global_keyprefix": prefix,
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"global_keyprefix": prefix},
        worker_hijack_root_logger=False,
    )
    return app


app = create_celery(get_settings())


def send_job(job_id: str, queue: str) -> None:
    app.send_task(RUN_JOB, args=[job_id], queue=queue)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Upkeep:
    """The worker's background thread: heartbeats, the reaper and the retention cleanup (Redis locks let one worker
    do each per interval, so no beat process is needed). A Redis error is logged and the loop goes on."""

    def __init__(self, settings: ServiceSettings, queues: tuple[str, ...]) -> None:
        self.settings, self.queues = settings, queues
        self.name = worker_name()
        self.store = JobStore(settings)
        self.storage = Storage(settings.storage_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vos-upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Best effort and bounded: the heartbeat ages out by itself, so a Redis that is down (or retried with
        # backoff) must not hold up the worker's shutdown.
        farewell = threading.Thread(target=self._forget, name="vos-upkeep-stop", daemon=True)
        farewell.start()
        farewell.join(STOP_WAIT_S)

    def _forget(self) -> None:
        try:
            self.store.worker_gone(self.name)
        except Exception:  # noqa: BLE001 - shutting down; the heartbeat simply ages out
            log.warning("could not remove the heartbeat of %s", self.name, exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._beat()
            self._stop.wait(self.settings.renew_interval_s)

    def _beat(self) -> None:
        try:
            self.store.worker_alive(self.name, self.queues)
            if self.store.try_lock("reaper", self.settings.reaper_interval_s):
                reap(self.store, self.storage, send_job)
            if self.store.try_lock("retention", self.settings.cleanup_interval_s):
                cleanup_expired(self.store, self.storage)
        except Exception:  # noqa: BLE001 - one failed round must never end the thread (readiness depends on it)
            log.warning("worker upkeep failed; retrying in %.1f s", self.settings.renew_interval_s, exc_info=True)


_upkeep: Upkeep | None = None


@worker_ready.connect
def _on_worker_ready(sender: object = None, **_: object) -> None:
    global _upkeep
    consumed = getattr(getattr(sender, "app", app).amqp.queues, "consume_from", None) or {}
    queues = tuple(name for name in QUEUES if name in consumed) or QUEUES
    _upkeep = Upkeep(get_settings(), queues)
    _upkeep.start()


@worker_shutting_down.connect
def _on_worker_shutdown(**_: object) -> None:
    if _upkeep is not None:
        _upkeep.stop()

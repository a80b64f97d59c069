"""The Celery application, configured from ``VOS_*`` environment variables.

Run a worker with ``celery -A workers.app worker --pool solo -c 1 -Q cpu`` (or ``-Q gpu`` on a GPU machine).
Tasks are acknowledged only after they finish and are redelivered when a worker is lost, so a job survives a
crashed worker; a per-job lease in Redis (see :mod:`workers.jobs`) keeps two workers from running it at once.
"""

from __future__ import annotations

import socket
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from kombu import Queue

from workers.jobs import JobStore
from workers.settings import ServiceSettings, get_settings

HEARTBEAT_S = 5.0


def create_celery(settings: ServiceSettings) -> Celery:
    app = Celery("seem_vos", broker=settings.redis_url, backend=settings.redis_url, include=["workers.tasks"])
    prefix = f"{settings.key_prefix}celery:"
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # job state lives in the job's Redis hash, not in Celery results
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_queues=(Queue("cpu"), Queue("gpu")),
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "global_keyprefix": prefix,
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"global_keyprefix": prefix},
        beat_schedule={"cleanup-expired-jobs": {"task": "workers.tasks.cleanup", "schedule": settings.cleanup_interval_s}},
        worker_hijack_root_logger=False,
    )
    return app


app = create_celery(get_settings())


class _Heartbeat:
    """Marks this worker alive in Redis every few seconds, so the API's /readyz can tell a worker is up."""

    def __init__(self) -> None:
        self.name = f"{socket.gethostname()}:{threading.get_native_id()}"
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="vos-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        JobStore(get_settings()).worker_gone(self.name)

    def _run(self) -> None:
        store = JobStore(get_settings())
        while not self._stop.is_set():
            store.worker_alive(self.name)
            self._stop.wait(HEARTBEAT_S)


_heartbeat = _Heartbeat()


@worker_ready.connect
def _on_worker_ready(**_: object) -> None:
    _heartbeat.start()


@worker_shutting_down.connect
def _on_worker_shutdown(**_: object) -> None:
    _heartbeat.stop()

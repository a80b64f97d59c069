"""Fault drills with real Redis servers and real worker processes: no job is lost, stranded or failed by a fault
that is not its own, and the service recovers within seconds.

Each drill runs on a private Redis (a server of its own that the test freezes, cuts or restarts) or a private key
prefix, so it cannot disturb the other tests. Timeouts are generous for a small shared CPU, and bounded.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis
from helpers import finished, read_sse, submit, wait_for
from service_conftest import FAST_TIMINGS, REDIS_URL, private_service

from workers.core.settings import ServiceSettings
from workers.core.storage import Storage
from workers.core.store import JobStore

TINY_PROMPT = [{"object_id": 1, "points": [{"x": 30, "y": 18}]}]  # inside the 64x36 frames of videos["tiny"]


def private_settings(tmp_path, redis_url: str, **overrides) -> ServiceSettings:
    values = dict(redis_url=redis_url, key_prefix=f"vosfault-{uuid.uuid4().hex[:8]}:",
                  storage_url=str(tmp_path / "storage"), max_upload_bytes=8 << 20, **FAST_TIMINGS)
    values.update(overrides)
    return ServiceSettings(**values)


def stream_indices(store: JobStore, job_id: str) -> list[int]:
    return [int(fields[b"frame"]) for _, fields in store.redis.xrange(store.keys.stream(job_id)) if b"frame" in fields]


def test_a_frame_slower_than_the_lease_does_not_lose_it(server, videos, workers):
    """Item 1: the lease is renewed from a thread, so a 2.5 s frame under a 2 s lease keeps the job."""
    assert server.settings.lease_s < 2.5
    with server.client() as client:
        job = submit(client, videos["tiny"], TINY_PROMPT, engine="static", options='{"delay": 2.5}')
        status = wait_for(client, job["id"], finished, timeout=120)
    assert status["state"] == "succeeded", status
    assert status["attempts"] == 1 and status["retry_reason"] is None and status["frames_done"] == 4


def test_redis_cut_and_frozen_neither_fails_nor_strands_the_job(tmp_path, private_redis, videos):
    """Items 2 and 3: connections cut, then Redis frozen for longer than the lease: the job still succeeds, every
    frame is streamed once, and the worker's heartbeat comes back (readiness does not stay down)."""
    settings = private_settings(tmp_path, private_redis.url)
    with private_service(settings, tmp_path) as (api, pool):
        store = pool.store
        with api.client() as client:
            job = submit(client, videos["dog"], engine="static", options='{"delay": 0.2}')
            wait_for(client, job["id"], lambda s: s["frames_done"] >= 3, timeout=60)
            store.redis.client_kill_filter(_type="normal", skipme=True)  # every other client's connection drops
            wait_for(client, job["id"], lambda s: s["frames_done"] >= 8, timeout=60)
            private_redis.freeze(3 * settings.lease_s + 2)  # the lease expires while nobody can renew it
            status = wait_for(client, job["id"], finished, timeout=120)
            ready = wait_for_ready(client, timeout=30)
    assert status["state"] == "succeeded", status
    assert status["frames_done"] == 30 and status["attempts"] <= 2
    assert stream_indices(store, job["id"]) == list(range(30))
    assert ready["workers"]["cpu"] == 1


def wait_for_ready(client, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s: {response.json()}")


def test_killed_worker_is_replaced_within_a_minute_with_default_timings(tmp_path, videos):
    """Item 4: with the default lease and reaper settings, a job whose worker got SIGKILL shows `retrying` and runs
    again on another worker well within 60 s; the client's stream still gets every frame once."""
    settings = ServiceSettings(redis_url=REDIS_URL, key_prefix=f"vosdefault-{uuid.uuid4().hex[:8]}:",
                               storage_url=str(tmp_path / "storage"))
    assert settings.visibility_timeout_s > settings.task_time_limit_s  # the defaults themselves are consistent
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as error:
        pytest.skip(f"needs Redis at {REDIS_URL}: {error}")
    with private_service(settings, tmp_path, workers=2) as (api, pool):
        with api.client() as client:
            job = submit(client, videos["dog60"], engine="slow", options='{"delay": 0.3}')
            streamed: dict = {}
            reader = threading.Thread(target=lambda: streamed.update(zip(("frames", "end"), read_sse(
                api.client(timeout=None), job["stream_url"]))))
            reader.start()
            running = wait_for(client, job["id"], lambda s: s["frames_done"] >= 5, timeout=90)
            holder = pool.store.get(job["id"]).worker
            pool.kill(pool.by_name(holder))
            killed_at = time.monotonic()
            retrying = wait_for(client, job["id"], lambda s: s["state"] == "retrying" or s["attempts"] == 2,
                                timeout=60, interval=0.2)
            resumed = wait_for(client, job["id"], lambda s: s["attempts"] == 2 and s["state"] == "running",
                               timeout=60, interval=0.2)
            resumed_after = time.monotonic() - killed_at
            reader.join(180)
            final = client.get(job["status_url"]).json()
    assert running["frames_done"] < 60
    assert "worker" in (retrying["retry_reason"] or "") and resumed["retry_reason"] == retrying["retry_reason"]
    assert resumed_after < 60, resumed_after
    assert pool.store.get(job["id"]).worker != holder
    assert final["state"] == "succeeded" and streamed["end"]["state"] == "succeeded"
    assert [f["frame"] for f in streamed["frames"]] == list(range(60))


def test_a_vanished_record_ends_the_stream_and_removes_the_files(tmp_path, private_redis, videos):
    """Item 5: Redis restarted without persistence: connected clients get an end event with an error, the worker
    stops and the job's files are removed."""
    settings = private_settings(tmp_path, private_redis.url)
    storage = Storage(settings.storage_url)
    with private_service(settings, tmp_path) as (api, pool):
        with api.client() as client:
            job = submit(client, videos["dog60"], engine="slow", options='{"delay": 0.3}')
            streamed: dict = {}
            reader = threading.Thread(target=lambda: streamed.update(zip(("frames", "end"), read_sse(
                api.client(timeout=None), job["stream_url"]))))
            reader.start()
            wait_for(client, job["id"], lambda s: s["frames_done"] >= 3, timeout=60)
            private_redis.kill()
            private_redis.start()  # same port, no data
            reader.join(60)
            deadline = time.monotonic() + 30
            while storage.exists(storage.path(job["id"])) and time.monotonic() < deadline:
                time.sleep(0.2)
            gone = client.get(job["status_url"])
    assert not reader.is_alive(), "the stream did not end"
    assert streamed["end"]["state"] == "failed" and "vanished" in streamed["end"]["error"]
    assert not storage.exists(storage.path(job["id"]))
    assert gone.status_code == 404


def test_an_engine_crash_fails_the_job_as_a_service_fault(server, videos):
    """A job accepted with 202 whose engine then fails: it ends `failed` (not stranded in `running`), its stream
    ends, and the message says the fault is the service's, not the request's."""
    with server.client() as client:
        job = submit(client, videos["tiny"], TINY_PROMPT, engine="crashing")
        frames, end = read_sse(client, job["stream_url"])
        status = client.get(job["status_url"]).json()
    assert status["state"] == "failed" and end["state"] == "failed"
    assert "internal error (RuntimeError)" in status["error"] and "not of the request" in status["error"]
    assert [f["frame"] for f in frames] == [0, 1] and status["attempts"] == 1


def test_a_job_for_a_queue_without_workers_is_refused(tmp_path, videos):
    """Item 7: a GPU job while no worker serves the gpu queue is refused with a clear message (not queued for
    ever); readiness reports each queue."""
    settings = private_settings(tmp_path, REDIS_URL, gpu_engines=frozenset({"slow"}))
    with private_service(settings, tmp_path, queues="cpu") as (api, _):
        with api.client() as client:
            refused = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["tiny"].read_bytes())},
                                  data={"prompts": json.dumps(TINY_PROMPT), "engine": "slow"})
            on_cpu = submit(client, videos["tiny"], TINY_PROMPT, engine="static")
            ready, gpu_ready = client.get("/readyz"), client.get("/readyz", params={"queue": "gpu"})
            wait_for(client, on_cpu["id"], finished, timeout=60)
    assert refused.status_code == 503
    assert "no worker serves the 'gpu' queue" in refused.json()["detail"]
    assert ready.status_code == 200 and ready.json()["workers"] == {"cpu": 1, "gpu": 0}
    assert gpu_ready.status_code == 503 and "'gpu'" in gpu_ready.json()["detail"]


def test_workers_delete_expired_jobs_without_a_beat_process(tmp_path, videos):
    """Retention runs in the workers' upkeep thread: a finished job's record and files go after retention_s."""
    settings = private_settings(tmp_path, REDIS_URL, retention_s=2.0, cleanup_interval_s=1.0)
    storage = Storage(settings.storage_url)
    with private_service(settings, tmp_path) as (api, pool):
        with api.client() as client:
            job = submit(client, videos["tiny"], TINY_PROMPT, engine="static")
            assert wait_for(client, job["id"], finished, timeout=60)["state"] == "succeeded"
            gone = wait_for_gone(client, job["status_url"], timeout=30)
    assert gone and not storage.exists(storage.path(job["id"]))


def wait_for_gone(client, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(url).status_code == 404:
            return True
        time.sleep(0.2)
    return False

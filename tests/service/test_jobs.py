"""End to end through a real uvicorn server, Redis and a Celery worker: submit, stream, resume, download, cancel."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import av
import httpx
import numpy as np
from helpers import DOG_POINT, centroid, finished, read_ndjson, read_sse, submit, wait_for
from PIL import Image

from workers.core.maintenance import cleanup_expired, remove_orphans
from workers.core.models import JobState, new_job_id
from workers.core.storage import Storage


def test_stream_delivers_every_frame_once_and_masks_follow_the_dog(server, videos, shared_dir):
    # shared_dir: the masks are checked against the dog of the shared video (the clip's source when it is there).
    with server.client() as client:
        job = submit(client, videos["dog"])
        assert len(job["id"]) >= 20
        frames, end = read_sse(client, job["stream_url"])
        status = client.get(job["status_url"]).json()
    assert end == {"state": "succeeded", "error": None}
    assert [f["frame"] for f in frames] == list(range(30))
    for record in frames[:5]:
        obj = record["objects"][0]
        assert obj["object_id"] == 1 and obj["area"] > 50 and len(obj["bbox"]) == 4 and 0 <= obj["score"] <= 1
        x, y = centroid(record)
        assert abs(x - DOG_POINT[0]) < 40 and abs(y - DOG_POINT[1]) < 40, (record["frame"], x, y)
    assert status["state"] == "succeeded" and status["frames_done"] == status["frames_total"] == 30
    assert status["frames_per_second"] > 0 and status["timings"]["finished_at"] >= status["timings"]["started_at"]


def test_late_reconnect_and_ndjson_give_the_same_frames(server, videos):
    with server.client() as client:
        job = submit(client, videos["dog"])
        first, end = read_sse(client, job["stream_url"], max_frames=7)
        assert end is None
        rest, end = read_sse(client, job["stream_url"], headers={"Last-Event-ID": str(first[-1]["frame"])})
        assert end["state"] == "succeeded"
        assert [f["frame"] for f in first + rest] == list(range(30))
        lines, ndjson_end = read_ndjson(client, job["stream_url"])
        after, _ = read_sse(client, job["stream_url"] + "?after=27")
    assert lines == first + rest and ndjson_end["state"] == "succeeded"
    assert [f["frame"] for f in after] == [28, 29]


def test_downloads(server, videos):
    with server.client() as client:
        job = submit(client, videos["dog"])
        wait_for(client, job["id"], finished)
        status = client.get(job["status_url"]).json()
        assert status["state"] == "succeeded", status
        archive = client.get(status["results"]["masks.zip"])
        rle = client.get(status["results"]["masks.jsonl"])
        overlay = client.get(status["results"]["overlay.mp4"])
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = sorted(zipped.namelist())
        assert names == [f"{i:05d}.png" for i in range(30)]
        image = Image.open(io.BytesIO(zipped.read(names[0])))
        assert image.mode == "P" and image.size == (320, 180) and 1 in np.unique(np.array(image))
    lines = [json.loads(line) for line in rle.text.splitlines()]
    assert [line["frame"] for line in lines] == list(range(30))
    assert lines[0]["objects"][0]["rle"]["size"] == [180, 320]
    with av.open(io.BytesIO(overlay.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30


def test_cancel_stops_the_worker_and_removes_files(server, videos, store):
    storage = Storage(server.settings.storage_url)
    with server.client() as client:
        job = submit(client, videos["dog60"], engine="slow")
        wait_for(client, job["id"], lambda s: s["frames_done"] >= 3)
        deleted = client.delete(f"/v1/jobs/{job['id']}").json()
        assert deleted["state"] == "cancelled" and deleted["files_deleted"]
        at_cancel = deleted["frames_done"]
        time.sleep(1.5)  # the slow engine takes 0.1 s a frame: a worker that went on would publish ~15 frames
        status = client.get(job["status_url"]).json()
        assert status["state"] == "cancelled" and status["frames_done"] <= at_cancel + 2
        assert not storage.exists(storage.path(job["id"]))
        assert client.get(job["stream_url"]).status_code == 410
        assert client.get(f"{job['status_url']}/results/masks.zip").status_code == 410
    assert store.redis.get(store.keys.lease(job["id"])) is None  # the worker let go of the job


def test_cancel_ends_a_connected_stream(server, videos):
    with server.client() as client:
        job = submit(client, videos["dog60"], engine="slow")
        wait_for(client, job["id"], lambda s: s["frames_done"] >= 2)
        timer = threading.Timer(0.3, lambda: httpx.delete(f"{server.url}/v1/jobs/{job['id']}"))
        timer.start()
        frames, end = read_sse(client, job["stream_url"])
        timer.join()
    assert end["state"] == "cancelled"
    assert [f["frame"] for f in frames] == list(range(len(frames))) and len(frames) < 60


def test_health_readiness_and_metrics(server, videos):
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"]["cpu"] >= 1
        submit(client, videos["dog"])
        metrics = client.get("/metrics").text
        docs = client.get("/docs")
    assert 'vos_jobs{state="succeeded"}' in metrics and 'vos_queue_depth{queue="cpu"}' in metrics
    assert "vos_frames_processed_total" in metrics and "vos_http_request_duration_seconds_bucket" in metrics
    assert docs.status_code == 200


def test_api_key_is_required_when_configured(settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"api_key": "s3cret"}))) as client:
        assert client.get("/v1/jobs/nope").status_code == 401
        assert client.get("/v1/jobs/nope", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/v1/jobs/nope", headers={"X-API-Key": "s3cret"}).status_code == 404
        assert client.get("/healthz").status_code == 200


def test_retention_cleanup_deletes_old_jobs_only(server, videos, store):
    storage = Storage(server.settings.storage_url)
    with server.client() as client:
        job = submit(client, videos["dog"])
        wait_for(client, job["id"], finished)
    orphan = new_job_id()  # a folder without a record: an API that died mid-upload, or a record Redis lost
    storage.write_bytes(storage.path(orphan, "input", "video.mp4"), b"partial")
    assert job["id"] not in cleanup_expired(store, storage)  # not yet expired
    assert orphan not in remove_orphans(store, storage)  # maybe an upload in progress
    assert orphan in remove_orphans(store, storage, now=time.time() + server.settings.orphan_grace_s + 1)
    assert storage.exists(storage.path(job["id"]))  # a job with a record is never an orphan
    later = time.time() + server.settings.retention_s + 60
    assert job["id"] in cleanup_expired(store, storage, now=later)
    assert store.get(job["id"]) is None and not storage.exists(storage.path(job["id"]))
    assert job["id"] not in {m.decode() for m in store.redis.smembers(store.keys.state_set(JobState.SUCCEEDED))}

"""A worker killed with SIGKILL mid-job: another worker re-runs the job and clients still see every frame once."""

from __future__ import annotations

import threading

from helpers import read_ndjson, read_sse, submit, wait_for


def test_job_survives_a_killed_worker(server, videos, workers, store):
    with server.client() as client:
        job = submit(client, videos["dog60"], engine="slow")
        streamed: dict = {}
        reader = threading.Thread(target=lambda: streamed.update(zip(("frames", "end"), read_sse(
            server.client(), job["stream_url"]))))
        reader.start()
        wait_for(client, job["id"], lambda s: s["frames_done"] >= 10)
        workers.kill(workers.current)
        killed_at = client.get(job["status_url"]).json()["frames_done"]
        assert killed_at < 60, "the job finished before the worker was killed"
        workers.start()
        reader.join(120)
        status = client.get(job["status_url"]).json()
        replay, end = read_ndjson(client, job["stream_url"])
    assert streamed["end"]["state"] == "succeeded", streamed["end"]
    assert [f["frame"] for f in streamed["frames"]] == list(range(60))
    assert [f["frame"] for f in replay] == list(range(60)) and end["state"] == "succeeded"
    assert status["attempts"] == 2 and status["frames_done"] == 60
    # The stream itself holds no duplicate either: the re-run published only the frames after the last one.
    entries = store.redis.xrange(store.keys.stream(job["id"]))
    indices = [int(fields[b"frame"]) for _, fields in entries if b"frame" in fields]
    assert indices == list(range(60))

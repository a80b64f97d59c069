"""Small helpers shared by the service tests: submit a job, read its SSE / NDJSON stream, wait for a state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vos.masks import decode_rle

DOG_POINT = (150.0, 107.0)  # on the dog's back in the first frames of the 320x180 cut
POINT_PROMPT = [{"object_id": 1, "points": [{"x": DOG_POINT[0], "y": DOG_POINT[1]}]}]


def tracking_engine() -> str:
    """The classical engine once it exists; until then the tests' static engine keeps the plumbing tested."""
    from vos.engine import engine_class

    try:
        engine_class("classical")
        return "classical"
    except ImportError:
        return "static"


def submit(client: httpx.Client, video: Path, prompts: Any = None, **fields: Any) -> dict[str, Any]:
    data = {"prompts": json.dumps(POINT_PROMPT if prompts is None else prompts), "engine": tracking_engine(), **fields}
    response = client.post("/v1/jobs", files={"video": (video.name, video.read_bytes(), "video/mp4")}, data=data)
    assert response.status_code == 202, response.text
    return response.json()


def sse_events(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The server-sent events of ``url``, each as its fields (``event``, ``id``, ``data``); comments are skipped.
    Stopping the iteration closes the stream."""
    event: dict[str, str] = {}
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                event[name] = value.strip()
                continue
            if event:
                yield event
            event = {}


def read_sse(client: httpx.Client, url: str, headers: dict[str, str] | None = None,
             max_frames: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Frames (with their SSE ids checked) and the end event, or None if ``max_frames`` stopped reading first."""
    frames: list[dict[str, Any]] = []
    for event in sse_events(client, url, headers):
        if event.get("event") == "end":
            return frames, json.loads(event["data"])
        if event.get("event") == "frame":
            record = json.loads(event["data"])
            assert int(event["id"]) == record["frame"]
            frames.append(record)
            if max_frames is not None and len(frames) >= max_frames:
                return frames, None
    raise AssertionError("the stream closed without an end event")


def read_ndjson(client: httpx.Client, url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with client.stream("GET", url, headers={"Accept": "application/x-ndjson"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "end" in lines[-1]
    return lines[:-1], lines[-1]["end"]


def wait_for(client: httpx.Client, job_id: str, predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(status):
            return status
        time.sleep(interval)
    raise AssertionError(f"job {job_id} never reached the expected condition: {status}")


def finished(status: dict[str, Any]) -> bool:
    return status["state"] in ("succeeded", "failed", "cancelled")


def centroid(record: dict[str, Any], object_id: int = 1) -> tuple[float, float] | None:
    for obj in record["objects"]:
        if obj["object_id"] == object_id:
            mask = decode_rle(obj["rle"])
            if not mask.any():
                return None
            ys, xs = np.nonzero(mask)
            return float(xs.mean()), float(ys.mean())
    return None

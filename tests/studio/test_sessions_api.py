"""The /v1/sessions API against real Redis, real Celery workers and a real uvicorn server, on the shipped sample."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from helpers import sse_events
from PIL import Image
from studio_helpers import SAMPLE, SAMPLE_MASK, SWAN_POINT, open_session

from eval.runner import interior_point
from vos.masks import decode_rle

NDJSON = {"Accept": "application/x-ndjson"}


def prompt(client: httpx.Client, session_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/sessions/{session_id}/prompts", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def click(x: float, y: float, positive: bool = True) -> list[dict[str, Any]]:
    return [{"x": x, "y": y, "positive": positive}]


def mask_of(record: dict[str, Any], object_id: int) -> np.ndarray | None:
    for item in record["objects"]:
        if item["object_id"] == object_id:
            return decode_rle(item["rle"])
    return None


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def events(client: httpx.Client, session_id: str, after: str | None = None, until_run: str | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:
    """NDJSON events of the session, until ``until_run`` ends or ``limit`` events were read (then disconnects)."""
    params = {k: v for k, v in {"after": after, "until_run": until_run}.items() if v}
    read: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/sessions/{session_id}/events", params=params, headers=NDJSON) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line:
                read.append(json.loads(line))
                if limit is not None and len(read) >= limit:
                    break
    return read


def propagate(client: httpx.Client, session_id: str, start: int, direction: str) -> dict[str, Any]:
    response = client.post(f"/v1/sessions/{session_id}/propagate", json={"from": start, "direction": direction})
    assert response.status_code == 202, response.text
    return response.json()


def frames_of(read: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in read if e["event"] == "frame" and e["data"]["run"] == run_id]


# ---------------------------------------------------------------------------------------------- reading the video


def test_session_reports_video_and_engine_capabilities(client: httpx.Client, session: dict[str, Any]) -> None:
    assert session["video"] == {"width": 854, "height": 480, "fps": 24.0, "num_frames": 50}
    assert "points" in session["supported_prompts"] and "text" not in session["supported_prompts"]
    assert session["unsupported_hint"]
    assert client.get(f"/v1/sessions/{session['id']}").json()["id"] == session["id"]


def test_frame_jpeg_resized_matches_the_video(client: httpx.Client, session: dict[str, Any]) -> None:
    response = client.get(f"/v1/sessions/{session['id']}/frames/49", params={"width": 427})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = np.array(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert image.shape == (240, 427, 3)
    from vos.video import open_video

    with open_video(SAMPLE) as video:
        last = list(video)[49]
    expected = cv2.resize(last, (427, 240), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(image.astype(float) - expected).mean() < 6  # the same frame, up to JPEG loss


def test_thumbnail_strip_lists_its_frames(client: httpx.Client, session: dict[str, Any]) -> None:
    response = client.get(f"/v1/sessions/{session['id']}/thumbnails", params={"count": 10, "height": 40})
    assert response.status_code == 200
    frames = [int(i) for i in response.headers["X-Frames"].split(",")]
    assert frames[0] == 0 and frames[-1] == 49 and len(frames) == 10
    strip = Image.open(io.BytesIO(response.content))
    assert strip.height == 40 and strip.width == 10 * round(854 * 40 / 480)


# ---------------------------------------------------------------------------------------------- prompts


def test_click_returns_the_library_sessions_mask_at_once(client: httpx.Client, session: dict[str, Any]) -> None:
    from vos.engine import create_engine
    from vos.prompts import parse_prompts
    from vos.session import Session
    from vos.video import open_video

    body = {"object_id": 1, "frame_index": 0, "points": click(*SWAN_POINT)}
    record = prompt(client, session["id"], **body)
    assert record["frame"] == 0 and record["revision"] == 1 and record["run"] == ""
    with open_video(SAMPLE) as video, Session(create_engine("classical"), video) as library:
        expected = library.add_prompt(parse_prompts([body])[0]).objects[1].mask
    assert iou(mask_of(record, 1), expected) > 0.99  # how good the mask is, is the engine's business


def test_second_object_prompt_returns_every_object_and_remove_drops_it(client: httpx.Client,
                                                                       session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    record = prompt(client, sid, object_id=2, frame_index=0, box={"x0": 700, "y0": 20, "x1": 850, "y1": 120})
    assert sorted(o["object_id"] for o in record["objects"]) == [1, 2]
    assert record["revision"] == 2
    assert not (mask_of(record, 1) & mask_of(record, 2)).any()
    assert client.delete(f"/v1/sessions/{sid}/objects/2").status_code == 200
    after = client.post(f"/v1/sessions/{sid}/prompts", json={"object_id": 1, "frame_index": 0,
                                                              "points": click(*SWAN_POINT)}).json()
    assert [o["object_id"] for o in after["objects"]] == [1]


def test_clear_prompts_on_a_frame_empties_that_object_there(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=10, points=click(*SWAN_POINT))
    response = client.delete(f"/v1/sessions/{sid}/objects/1/frames/10")
    assert response.status_code == 200, response.text
    mask = mask_of(response.json(), 1)
    assert mask is None or not mask.any()


def test_undo_returns_the_frame_as_before_the_last_prompt(client: httpx.Client, session: dict[str, Any]) -> None:
    """Undo drops the last prompt, a correction included: its frame gets back the masks it had, and the session's
    state is as before it (a second undo drops the first click, after which nothing is left to propagate)."""
    sid = session["id"]
    first = prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    taken = interior_point(mask_of(first, 1) & ~(np.array(Image.open(SAMPLE_MASK)) > 0))  # background it took
    corrected = prompt(client, sid, object_id=1, frame_index=0, points=click(taken.x, taken.y, positive=False))
    assert not np.array_equal(mask_of(corrected, 1), mask_of(first, 1))
    undone = client.post(f"/v1/sessions/{sid}/undo")
    assert undone.status_code == 200, undone.text
    assert undone.json()["revision"] == 3
    assert np.array_equal(mask_of(undone.json(), 1), mask_of(first, 1))
    again = client.post(f"/v1/sessions/{sid}/undo")
    assert again.status_code == 200 and again.json()["revision"] == 4 and not again.json()["objects"]
    nothing = client.post(f"/v1/sessions/{sid}/propagate", json={"from": 0, "direction": "forward"})
    assert nothing.status_code == 409 and "no object" in nothing.json()["detail"]
    assert client.post(f"/v1/sessions/{sid}/undo").status_code == 409


def test_prepared_frame_caches_what_a_click_needs(client: httpx.Client, session: dict[str, Any]) -> None:
    """Preparing the frame the user looks at moves the frame's decoding and motion cue off the click; the click's
    mask is the same as without it, and the prompt response splits its time in Server-Timing."""
    sid = session["id"]
    response = client.post(f"/v1/sessions/{sid}/frames/12/prepare")
    assert response.status_code == 200, response.text
    assert response.json()["frame"] == 12 and response.json()["prepared"] and response.json()["worker_ms"] > 0
    response = client.post(f"/v1/sessions/{sid}/prompts", json={"object_id": 1, "frame_index": 12,
                                                               "points": click(*SWAN_POINT)})
    assert response.status_code == 200, response.text
    timings = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
    assert set(timings) == {"check", "relay", "worker", "engine", "api"}
    assert float(timings["engine"]) <= float(timings["worker"]) <= float(timings["relay"]) <= float(timings["api"])
    cold = open_session(client)
    try:
        expected = prompt(client, cold["id"], object_id=1, frame_index=12, points=click(*SWAN_POINT))
    finally:
        client.delete(f"/v1/sessions/{cold['id']}")
    assert np.array_equal(mask_of(response.json(), 1), mask_of(expected, 1))


# ---------------------------------------------------------------------------------------------- propagation


def test_propagate_both_ways_streams_every_other_frame_once(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=25, box={"x0": 120, "y0": 60, "x1": 520, "y1": 400})
    run = propagate(client, sid, 25, "both")
    assert run["total"] == 49
    read = events(client, sid, until_run=run["id"])
    frames = frames_of(read, run["id"])
    assert sorted(f["frame"] for f in frames) == [i for i in range(50) if i != 25]
    forward = [f["frame"] for f in frames if f["frame"] > 25]
    backward = [f["frame"] for f in frames if f["frame"] < 25]
    assert forward == sorted(forward) and backward == sorted(backward, reverse=True)
    assert all(f["revision"] == 1 for f in frames)
    ends = [e["data"] for e in read if e["event"] == "run" and e["data"]["state"] != "running"]
    assert ends[-1]["state"] == "done"
    areas = [next(o["area"] for o in f["objects"] if o["object_id"] == 1) for f in frames]
    assert min(areas) > 0.3 * max(areas)  # the swan stays in view and is followed, not lost


def test_reconnect_gets_every_revision_once_in_order(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    first = propagate(client, sid, 0, "forward")
    part = events(client, sid, limit=12)  # disconnects mid-run
    rest = events(client, sid, after=part[-1]["id"], until_run=first["id"])
    prompt(client, sid, object_id=1, frame_index=20, points=click(150, 150, positive=False))
    second = propagate(client, sid, 20, "forward")
    more = events(client, sid, after=rest[-1]["id"], until_run=second["id"])
    seen = [(e["data"]["frame"], e["data"]["revision"]) for e in part + rest + more if e["event"] == "frame"]
    assert len(seen) == len(set(seen))  # nothing twice
    everything = [(e["data"]["frame"], e["data"]["revision"])
                  for e in events(client, sid, until_run=second["id"]) if e["event"] == "frame"]
    assert seen == everything  # nothing missing, same order as one uninterrupted reader
    revisions: dict[int, list[int]] = {}
    for frame, revision in seen:
        revisions.setdefault(frame, []).append(revision)
    assert all(r == list(range(1, len(r) + 1)) for r in revisions.values())  # each revision, in order
    assert revisions[30][-1] >= 2  # frames after the correction were revised


def test_reconnect_after_the_stream_was_trimmed_gets_the_latest_revision_of_every_frame(
        client: httpx.Client, session: dict[str, Any], store: Any) -> None:
    from workers.sessions import SessionKeys

    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")
    everything = events(client, sid, until_run=run["id"])
    store.redis.xtrim(SessionKeys(store.settings.key_prefix).events(sid), maxlen=5, approximate=False)
    resumed = events(client, sid, after=everything[0]["id"], until_run=run["id"])
    frames = [e["data"] for e in resumed if e["event"] == "frame"]
    assert sorted(f["frame"] for f in frames) == list(range(50))  # each frame once, from storage
    latest = {e["data"]["frame"]: e["data"]["revision"] for e in everything if e["event"] == "frame"}
    assert all(f["revision"] == latest[f["frame"]] for f in frames)
    assert resumed[-1]["event"] == "run" and resumed[-1]["data"]["state"] == "done"


def test_stop_ends_a_propagation_early(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")
    events(client, sid, limit=4)  # the run is under way
    assert client.post(f"/v1/sessions/{sid}/stop").json() == {"stopped": True}
    read = events(client, sid, until_run=run["id"])
    assert read[-1]["data"]["state"] == "stopped"
    assert len(frames_of(read, run["id"])) < 49
    assert client.get(f"/v1/sessions/{sid}").json()["run"] is None


def test_a_prompt_during_propagation_stops_it_and_is_applied(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")
    events(client, sid, limit=4)
    record = prompt(client, sid, object_id=2, frame_index=40, box={"x0": 700, "y0": 20, "x1": 850, "y1": 120})
    assert record["frame"] == 40 and 2 in {o["object_id"] for o in record["objects"]}
    read = events(client, sid, until_run=run["id"])
    assert read[-1]["data"]["state"] == "stopped"


def test_export_zip_json_and_overlay_hold_the_latest_revisions(client: httpx.Client,
                                                                session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")
    frames = {f["frame"]: f for f in frames_of(events(client, sid, until_run=run["id"]), run["id"])}
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/v1/sessions/{sid}/results/masks.zip").content))
    names = sorted(archive.namelist())
    assert len(names) == 50
    labels = np.array(Image.open(archive.open(names[30])))
    assert iou(labels == 1, mask_of(frames[30], 1)) > 0.99
    lines = client.get(f"/v1/sessions/{sid}/results/masks.jsonl").text.strip().splitlines()
    assert len(lines) == 50 and json.loads(lines[30])["frame"] == 30
    overlay = client.get(f"/v1/sessions/{sid}/results/overlay.mp4")
    assert overlay.status_code == 200 and overlay.content[4:8] == b"ftyp"


# ---------------------------------------------------------------------------------------------- workers


def test_kill_9_of_the_pinned_worker_rebuilds_the_session_elsewhere(client: httpx.Client, workers: Any,
                                                                     store: Any) -> None:
    spare = workers.start()  # the session moves to whichever worker survives
    session = open_session(client)
    sid = session["id"]
    before = prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    pinned = client.get(f"/v1/sessions/{sid}").json()
    pid = int(_pinned_worker(store, sid).rsplit(":", 1)[1])
    victim = next(p for p in workers.processes if p.pid == pid)
    workers.kill(victim)
    started = time.monotonic()
    record = prompt(client, sid, object_id=2, frame_index=0, box={"x0": 700, "y0": 20, "x1": 850, "y1": 120})
    delay = time.monotonic() - started
    assert sorted(o["object_id"] for o in record["objects"]) == [1, 2]  # object 1 replayed from the log
    assert iou(mask_of(record, 1), mask_of(before, 1)) > 0.95
    assert record["revision"] == 2  # revision numbers go on across the move
    assert _pinned_worker(store, sid) != f"{pinned['id']}" and delay < 30
    run = propagate(client, sid, 0, "forward")
    assert len(frames_of(events(client, sid, until_run=run["id"]), run["id"])) == 49
    client.delete(f"/v1/sessions/{sid}")
    assert spare.poll() is None or victim is spare


def test_kill_9_during_propagation_resumes_it(client: httpx.Client, workers: Any, store: Any) -> None:
    workers.start()
    session = open_session(client)
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")
    part = events(client, sid, limit=6)
    pid = int(_pinned_worker(store, sid).rsplit(":", 1)[1])
    workers.kill(next(p for p in workers.processes if p.pid == pid))
    rest = events(client, sid, after=part[-1]["id"], until_run=run["id"])
    frames = {e["data"]["frame"] for e in part + rest if e["event"] == "frame"}
    assert frames >= set(range(1, 50))  # every frame arrived, some of them again as new revisions
    assert rest[-1]["data"]["state"] == "done"
    client.delete(f"/v1/sessions/{sid}")


def _pinned_worker(store: Any, session_id: str) -> str:
    from workers.sessions import SessionKeys

    return store.redis.hget(SessionKeys(store.settings.key_prefix).record(session_id), "worker").decode()


# ---------------------------------------------------------------------------------------------- bad inputs


def test_session_from_a_finished_job_opens_its_video(client: httpx.Client) -> None:
    from helpers import submit, wait_for

    job = submit(client, SAMPLE, prompts=[{"object_id": 1, "points": [{"x": SWAN_POINT[0], "y": SWAN_POINT[1]}]}])
    wait_for(client, job["id"], lambda s: s["state"] in ("succeeded", "failed"), timeout=120)
    response = client.post("/v1/sessions", data={"job_id": job["id"]})
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["source_job"] == job["id"] and session["video"]["num_frames"] == 50
    job_frames = client.get(f"/v1/jobs/{job['id']}/frames", headers=NDJSON).text.strip().splitlines()
    job_masks = {r["frame"]: mask_of(r, 1) for r in map(json.loads, job_frames) if "frame" in r}
    opened = [e["data"] for e in events(client, session["id"], limit=50) if e["event"] == "frame"]
    assert [f["frame"] for f in opened] == list(range(50)) and {f["run"] for f in opened} == {"job"}
    assert all(np.array_equal(mask_of(f, 1), job_masks[f["frame"]]) for f in opened
               if job_masks[f["frame"]] is not None)
    corrected = prompt(client, session["id"], object_id=1, frame_index=20, points=click(150, 150, positive=False))
    assert corrected["revision"] == 2  # a correction of the job's mask on that frame

    untouched = client.post("/v1/sessions", data={"job_id": job["id"]}).json()  # the job's object, never prompted
    removed = client.delete(f"/v1/sessions/{untouched['id']}/objects/1")
    assert removed.status_code == 200, removed.text
    latest: dict[int, dict[str, Any]] = {}
    for event in events(client, untouched["id"], limit=50 + sum(m is not None for m in job_masks.values())):
        if event["event"] == "frame":
            latest[event["data"]["frame"]] = event["data"]
    assert len(latest) == 50 and all(not f["objects"] for f in latest.values())  # gone from every frame
    assert client.delete(f"/v1/sessions/{untouched['id']}/objects/1").status_code == 422  # and from the session
    client.delete(f"/v1/sessions/{untouched['id']}")
    client.delete(f"/v1/sessions/{session['id']}")


def test_every_object_of_an_opened_job_takes_part_in_propagations(client: httpx.Client) -> None:
    """The job's prompts become the session's anchors: an object the session never prompted (object 2) is
    propagated with the one it corrects, instead of being dropped from the frames the propagation changes."""
    from helpers import submit, wait_for

    background = np.zeros((480, 854), np.uint8)
    background[20:120, 700:850] = 255  # a patch of the shore, as a mask prompt: the job's anchor is exactly it
    ok, png = cv2.imencode(".png", background)
    job = submit(client, SAMPLE, prompts=[
        {"object_id": 1, "box": {"x0": 120, "y0": 60, "x1": 520, "y1": 400}},
        {"object_id": 2, "mask": {"png_base64": base64.b64encode(png.tobytes()).decode()}}])
    wait_for(client, job["id"], lambda s: s["state"] in ("succeeded", "failed"), timeout=180)
    session = client.post("/v1/sessions", data={"job_id": job["id"]}).json()
    sid = session["id"]
    try:
        truth = base64.b64encode(SAMPLE_MASK.read_bytes()).decode()  # object 1 corrected: the swan exactly
        prompt(client, sid, object_id=1, frame_index=0, mask={"png_base64": truth})
        run = propagate(client, sid, 0, "forward")
        propagated = frames_of(events(client, sid, until_run=run["id"]), run["id"])
        assert propagated  # the propagation changed frames: every one of them still has object 2
        assert all({o["object_id"] for o in f["objects"]} == {1, 2} for f in propagated)
        assert sum(o["area"] for o in propagated[0]["objects"] if o["object_id"] == 2) > 10_000
        cleared = client.delete(f"/v1/sessions/{sid}/objects/2/frames/0")  # the job's prompt of object 2 is there
        assert cleared.status_code == 200, cleared.text
    finally:
        client.delete(f"/v1/sessions/{sid}")


BAD_REQUESTS = [
    ("GET", "/v1/sessions/nosuchsession0000", {}, 404, "no session"),
    ("POST", "/v1/sessions", {"data": {"engine": "classical"}}, 422, "either a video file or a job_id"),
    ("POST", "/v1/sessions", {"data": {"job_id": "nosuchjob0000000"}}, 404, "no job"),
    ("POST", "/v1/sessions", {"data": {"job_id": "../../etc"}}, 422, "job_id"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.txt", b"hello", "text/plain")}}, 415, "not accepted"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.mp4", b"this is not a video" * 9, "video/mp4")}}, 422, "video"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.mp4", b"", "video/mp4")}, "data": {"options": "{"}}, 422,
     "options"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.mp4", b"", "video/mp4")}, "data": {"engine": "nope"}}, 422,
     "unknown engine"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.mp4", b"", "video/mp4")},
                              "data": {"engine": "seem", "options": '{"weights": "/etc/passwd"}'}}, 422, "not allowed"),
    ("POST", "/v1/sessions", {"files": {"video": ("x.mp4", b"", "video/mp4")},
                              "data": {"options": '{"working_width": "abc"}'}}, 422, "working_width"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), BAD_REQUESTS)
def test_bad_session_requests_get_a_4xx_with_a_message(client: httpx.Client, method: str, path: str,
                                                      kwargs: dict[str, Any], status: int, words: str) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


BAD_SESSION_REQUESTS = [
    ("GET", "/frames/50", {}, 422, "outside the video"),
    ("GET", "/frames/0?width=3", {}, 422, "width"),
    ("GET", "/thumbnails?count=0", {}, 422, "count"),
    ("POST", "/prompts", {"json": {"object_id": 1, "points": click(10, 10)}}, 422, "frame_index"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0, "points": click(900, 10)}}, 422, "outside"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 50, "points": click(10, 10)}}, 422, "frames"),
    ("POST", "/prompts", {"json": {"object_id": 0, "frame_index": 0, "points": click(10, 10)}}, 422, "object_id"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0}}, 422, "no prompt"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0, "text": "a swan"}}, 422, "text"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0, "mask": {"file": "m.png"}}}, 422, "files"),
    ("POST", "/prompts", {"json": [1, 2]}, 422, "dictionary"),
    ("POST", "/prompts", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ("POST", "/prompts", {"content": b'{"object_id": 1, "frame_index": 0, "points": ' + b"[" * 100000 + b"]" * 100000
                          + b"}", "headers": {"content-type": "application/json"}}, 400, "parsing the body"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0, "mask": {"rle": {"size": [-1, 5],
                                                                                     "counts": "abc"}}}}, 422, "RLE"),
    ("POST", "/prompts", {"json": {"object_id": 1, "frame_index": 0, "mask": {"rle": {"size": [10**6, 10**6],
                                                                                     "counts": "0"}}}}, 422, "limit"),
    ("POST", "/prompts", {"content": b'{"object_id": 1, "frame_index": 0, "points": [{"x": NaN, "y": 10}]}',
                          "headers": {"content-type": "application/json"}}, 422, "outside"),
    ("POST", "/prompts", {"content": b'{"object_id": 1, "frame_index": 0, "scribbles": [{"lines": [[[1, 1], [9, 9]]], '
                          b'"width": 1e400}]}', "headers": {"content-type": "application/json"}}, 422, "finite"),
    ("POST", "/propagate", {"json": {"from": 0, "direction": "sideways"}}, 422, "direction"),
    ("POST", "/propagate", {"json": {"from": 60, "direction": "forward"}}, 422, "outside the video"),
    ("POST", "/propagate", {"json": {"from": 0, "direction": "forward"}}, 409, "no object"),
    ("POST", "/undo", {}, 409, "nothing to undo"),
    ("POST", "/frames/50/prepare", {}, 422, "outside the video"),
    ("DELETE", "/objects/0", {}, 422, "object_id"),
    ("GET", "/results/secrets.txt", {}, 422, "name"),
    ("GET", "/events", {"headers": {"Last-Event-ID": "yesterday"}}, 422, "Last-Event-ID"),
]


@pytest.mark.parametrize(("method", "suffix", "kwargs", "status", "words"), BAD_SESSION_REQUESTS)
def test_bad_requests_on_a_session_get_a_4xx_with_a_message(client: httpx.Client, session: dict[str, Any],
                                                            method: str, suffix: str, kwargs: dict[str, Any],
                                                            status: int, words: str) -> None:
    response = client.request(method, f"/v1/sessions/{session['id']}{suffix}", **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_deleted_session_is_gone_with_its_files(client: httpx.Client, server: Any) -> None:
    from workers.sessions import get_session_settings

    session = open_session(client)
    folder = get_session_settings().storage_for(server.settings) + f"/{session['id']}"
    assert client.delete(f"/v1/sessions/{session['id']}").status_code == 204
    assert client.get(f"/v1/sessions/{session['id']}").status_code == 404
    import os

    assert not os.path.exists(folder)


def test_idle_session_expires_and_its_files_go(client: httpx.Client, server: Any) -> None:
    from workers.sessions import SessionServer, SessionSettings, SessionStore, get_session_settings

    session = open_session(client)
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    SessionStore(server.settings, SessionSettings(idle_s=1)).touch(sid)  # as if idle for its whole idle time
    time.sleep(2.5)
    response = client.post(f"/v1/sessions/{sid}/prompts", json={"object_id": 1, "frame_index": 0,
                                                               "points": click(*SWAN_POINT)})
    assert response.status_code == 404 and "expired" in response.json()["detail"]
    janitor = SessionServer(server.settings, get_session_settings())
    assert janitor.storage.exists(janitor.storage.path(sid))
    janitor.expire_sessions(now=time.time() + 120)  # files of a session without a record, once past the grace
    assert not janitor.storage.exists(janitor.storage.path(sid))


def test_sse_ids_resume_with_last_event_id(client: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    prompt(client, sid, object_id=1, frame_index=0, points=click(*SWAN_POINT))
    run = propagate(client, sid, 0, "forward")

    def read(headers: dict[str, str], limit: int | None) -> list[tuple[str, str, dict[str, Any]]]:
        read_events = []
        for event in sse_events(client, f"/v1/sessions/{sid}/events?until_run={run['id']}", headers):
            read_events.append((event["event"], event.get("id", ""), json.loads(event["data"])))
            if limit is not None and len(read_events) >= limit:
                break
        return read_events

    first = read({}, limit=5)
    rest = read({"Last-Event-ID": first[-1][1]}, limit=None)
    ids = [i for _, i, _ in first + rest]
    assert len(ids) == len(set(ids)) and all(i for i in ids)
    frames = [data["frame"] for name, _, data in first + rest if name == "frame"]
    assert frames == list(range(0, 50))  # the prompt's revision of frame 0, then frames 1..49 once each
    assert rest[-1][0] == "run" and rest[-1][2]["state"] == "done"


def test_only_the_latest_prepare_waits_for_the_sessions_thread(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrubbing sends a prepare per frame shown: one still waiting for the session's thread is answered as
    superseded by the next, so at most one waits in front of a click; none waits while the session propagates."""
    from workers.sessions import SessionServer, get_session_settings

    worker = SessionServer(server.settings, get_session_settings())
    replies: list[tuple[str, dict[str, Any]]] = []
    ran: list[int] = []
    monkeypatch.setattr(worker.store, "send_reply", lambda request, reply: replies.append((request, reply)))
    monkeypatch.setattr(worker, "_run", lambda session, command, received: ran.append(command["args"]["frame"]))

    class HeldThread:  # the session's thread, busy until the test runs what was submitted to it
        def __init__(self) -> None:
            self.submitted: list[Any] = []

        def submit(self, function: Any, *args: Any) -> None:
            self.submitted.append((function, args))

    thread = HeldThread()
    for frame in (3, 4, 5):
        worker._queue_prepare("s1", {"id": f"r{frame}", "op": "prepare", "args": {"frame": frame}}, thread)
    assert [(r, reply["result"]["reason"]) for r, reply in replies] == [("r3", "superseded by a later frame"),
                                                                       ("r4", "superseded by a later frame")]
    assert len(thread.submitted) == 1
    function, args = thread.submitted[0]
    function(*args)
    assert ran == [5]

    worker._propagating.add("s2")
    worker._queue_prepare("s2", {"id": "r9", "op": "prepare", "args": {"frame": 9}}, thread)
    assert replies[-1] == ("r9", {"ok": True, "result": {"frame": 9, "prepared": False,
                                                         "reason": "the session is propagating"}})
    assert len(thread.submitted) == 1

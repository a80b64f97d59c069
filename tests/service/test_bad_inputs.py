"""Malformed requests get a 4xx with a clear message, never a 500, and leave nothing behind."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import POINT_PROMPT, finished, submit, wait_for
from PIL import Image

from vos.masks import encode_rle
from workers.core.storage import Storage


def png_bytes(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3: height // 2, width // 3: width // 2] = 255
    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="PNG")
    return out.getvalue()


def rle_of(width: int, height: int) -> dict[str, Any]:
    mask = np.zeros((height, width), bool)
    mask[10:20, 10:20] = True
    return encode_rle(mask)


def rle_prompt(rle: Any) -> str:
    return json.dumps([{"object_id": 1, "mask": {"rle": rle}}])


def bomb_png(side: int) -> bytes:
    """A 1-bit PNG of side x side pixels: a few kB that would decode to side^2 bytes."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG", optimize=True)
    return out.getvalue()


BOMB = bomb_png(14000)
BOMB_BASE64 = json.dumps([{"object_id": 1, "mask": {"png_base64": base64.b64encode(BOMB).decode()}}])
GOOD = json.dumps(POINT_PROMPT)
CASES = [
    # id, video key, filename, form fields, extra files, status, message fragment
    ("no-prompts", "dog", "dog.mp4", {}, {}, 422, "prompts"),
    ("prompts-not-json", "dog", "dog.mp4", {"prompts": "[{object_id: 1"}, {}, 422, "not valid JSON"),
    ("prompts-an-object", "dog", "dog.mp4", {"prompts": '{"object_id": 1}'}, {}, 422, "must be a JSON list"),
    ("prompt-not-an-object", "dog", "dog.mp4", {"prompts": "[3]"}, {}, 422, "must be a JSON object"),
    ("empty-prompt-list", "dog", "dog.mp4", {"prompts": "[]"}, {}, 422, "no prompts"),
    ("object-id-zero", "dog", "dog.mp4", {"prompts": '[{"object_id": 0, "points": [{"x": 1, "y": 1}]}]'}, {}, 422,
     "object_id"),
    ("no-prompt-kind", "dog", "dog.mp4", {"prompts": '[{"object_id": 1}]'}, {}, 422, "has no prompt"),
    ("point-outside", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "points": [{"x": 500, "y": 20}]}]'}, {}, 422,
     "outside the 320x180 frame"),
    ("box-reversed", "dog", "dog.mp4",
     {"prompts": '[{"object_id": 1, "box": {"x0": 50, "y0": 50, "x1": 10, "y1": 60}}]'}, {}, 422, "x1 > x0"),
    ("duplicate-object", "dog", "dog.mp4", {"prompts": json.dumps(POINT_PROMPT * 2)}, {}, 422, "prompted twice"),
    ("frame-beyond-video", "dog", "dog.mp4",
     {"prompts": '[{"object_id": 1, "frame_index": 99, "points": [{"x": 5, "y": 5}]}]'}, {}, 422, "has 30 frames"),
    ("rle-wrong-size", "dog", "dog.mp4", {"prompts": json.dumps([{"object_id": 1, "mask": {"rle": rle_of(64, 64)}}])},
     {}, 422, "expected 320x180"),
    ("png-wrong-size", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "m.png"}}]'},
     {"m.png": png_bytes(100, 50)}, 422, "expected 320x180"),
    ("mask-file-missing", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "absent.png"}}]'}, {}, 422,
     "no uploaded part"),
    ("mask-file-not-png", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "m.png"}}]'},
     {"m.png": b"not an image"}, 422, "not a readable PNG"),
    ("bad-base64", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"png_base64": "@@@"}}]'}, {}, 422,
     "not valid base64"),
    ("unknown-mask-encoding", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"bitmap": 1}}]'}, {}, 422,
     "unknown mask encoding"),
    ("unknown-engine", "dog", "dog.mp4", {"prompts": GOOD, "engine": "magic"}, {}, 422, "unknown engine"),
    ("unknown-option", "dog", "dog.mp4", {"prompts": GOOD, "options": '{"turbo": true}'}, {}, 422,
     "has no option turbo"),
    ("options-not-object", "dog", "dog.mp4", {"prompts": GOOD, "options": "[1]"}, {}, 422,
     "options must be a JSON object"),
    ("option-wrong-type", "dog", "dog.mp4", {"prompts": GOOD, "options": '{"delay": "abc"}'}, {}, 422, "option delay"),
    ("option-null", "dog", "dog.mp4", {"prompts": GOOD, "options": '{"delay": null}'}, {}, 422, "option delay"),
    ("prompts-nested-deeply", "dog", "dog.mp4", {"prompts": "[" * 100_000 + "]" * 100_000}, {}, 422,
     "nested too deeply"),
    ("options-nested-deeply", "dog", "dog.mp4", {"prompts": GOOD, "options": '{"a": ' * 50_000 + "1" + "}" * 50_000},
     {}, 422, "nested too deeply"),
    ("prompts-nested-30", "dog", "dog.mp4", {"prompts": "[" * 30 + "]" * 30}, {}, 422, "nested too deeply"),
    ("rle-negative-size", "dog", "dog.mp4", {"prompts": rle_prompt({"size": [-1, 5], "counts": "0"})}, {}, 422,
     "must be positive"),
    ("rle-million-size", "dog", "dog.mp4", {"prompts": rle_prompt({"size": [10**6, 10**6], "counts": "0"})}, {}, 422,
     "larger than the limit"),
    ("rle-20000-size", "dog", "dog.mp4", {"prompts": rle_prompt({"size": [20000, 20000], "counts": "0"})}, {}, 422,
     "larger than the limit"),
    ("rle-size-not-ints", "dog", "dog.mp4", {"prompts": rle_prompt({"size": ["a", 5], "counts": "0"})}, {}, 422,
     "two integers"),
    ("rle-counts-short", "dog", "dog.mp4", {"prompts": rle_prompt({"size": [180, 320], "counts": [5, 5]})}, {}, 422,
     "counts cover 10 pixels"),
    ("png-bomb", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "m.png"}}]'}, {"m.png": BOMB}, 422,
     "larger than the limit"),
    ("png-bomb-base64", "dog", "dog.mp4", {"prompts": BOMB_BASE64}, {}, 422, "larger than the limit"),
    ("reference-kind-before-decoding", "dog", "dog.mp4",
     {"prompts": '[{"object_id": 1, "reference": {"image": {"file": "r.png"}, "mask": {"file": "r.png"}}}]'},
     {"r.png": BOMB}, 422, "cannot use reference"),
    ("video-2x2", "2x2", "dog.mp4", {"prompts": '[{"object_id": 1, "points": [{"x": 1, "y": 1}]}]'}, {}, 422,
     "at least 16 pixels"),
    ("video-4096x4096", "huge", "dog.mp4", {"prompts": GOOD}, {}, 422, "pixels per frame"),
    ("seem-weights-path", "dog", "dog.mp4",
     {"prompts": GOOD, "engine": "seem", "options": '{"weights": "/etc/passwd"}'},
     {}, 422, "is not allowed"),
    ("seem-weights-outside", "dog", "dog.mp4",
     {"prompts": GOOD, "engine": "seem", "options": '{"weights": "../../etc/passwd"}'}, {}, 422, "is not allowed"),
    ("seem-variant-file", "dog", "dog.mp4", {"prompts": GOOD, "engine": "seem", "options": '{"variant": "/x.yaml"}'},
     {}, 422, "is not allowed"),
    ("prompts-field-over-limit", "dog", "dog.mp4", {"prompts": " " * (5 << 20) + GOOD}, {}, 413,
     "form field ('prompts' or 'options') is larger than"),
    ("text-on-weight-free", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "text": "a dog"}]', "engine": "static"},
     {}, 422, "cannot use text"),
    ("not-a-video", "text", "dog.mp4", {"prompts": GOOD}, {}, 422, "the uploaded video is not a readable video"),
    ("empty-file", "empty", "dog.mp4", {"prompts": GOOD}, {}, 422, "empty"),
    ("truncated", "truncated", "dog.mp4", {"prompts": GOOD}, {}, 422, "video"),
    ("container-not-allowed", "dog", "dog.gif", {"prompts": GOOD}, {}, 415, "container 'gif' is not accepted"),
    ("no-extension", "dog", "video", {"prompts": GOOD}, {}, 415, "no file extension"),
    ("too-many-frames", "long", "long.mp4", {"prompts": '[{"object_id": 1, "points": [{"x": 5, "y": 5}]}]'}, {}, 422,
     "the limit is 200"),
    ("too-large", "big", "big.mp4", {"prompts": GOOD}, {}, 413, "larger than the limit"),
]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    path.write_bytes(b"\0" * (9 << 20))  # over the tests' 8 MiB upload limit
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_upload_is_refused_cleanly(case, server, videos, big_file, store):
    _, video_key, filename, fields, extra, status, fragment = case
    video = big_file if video_key == "big" else videos[video_key]
    files = [("video", (filename, video.read_bytes(), "video/mp4"))]
    files += [(name, (name, data, "image/png")) for name, data in extra.items()]
    data = {"engine": "static", **fields}
    storage = Storage(server.settings.storage_url)
    before_dirs, before_keys = set(storage.job_ids()), set(store.redis.keys(f"{store.keys.prefix}job:*"))
    with server.client() as client:
        response = client.post("/v1/jobs", files=files, data=data)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"], response.json()
    assert "<_io." not in response.text and "/tmp/" not in response.text  # no object reprs or server paths
    assert set(storage.job_ids()) == before_dirs  # nothing half-created
    assert set(store.redis.keys(f"{store.keys.prefix}job:*")) == before_keys


def test_missing_video_part(server):
    with server.client() as client:
        response = client.post("/v1/jobs", data={"prompts": GOOD}, files={"other": ("x.txt", b"x", "text/plain")})
    assert response.status_code == 422 and "video" in response.json()["detail"]


@pytest.mark.parametrize("method, path, status, fragment", [
    ("GET", "/v1/jobs/unknown", 404, "no job"),
    ("GET", "/v1/jobs/unknown/frames", 404, "no job"),
    ("DELETE", "/v1/jobs/unknown", 404, "no job"),
    ("GET", "/v1/jobs/unknown/results/masks.zip", 404, "no job"),
    ("GET", "/v1/jobs/unknown/results/secrets.txt", 422, "name"),
    ("GET", "/v1/jobs/unknown:frames", 422, "job_id"),
    ("GET", "/v1/jobs/" + "x" * 65, 422, "job_id"),
    ("DELETE", "/v1/jobs/a%20b", 422, "job_id"),
])
def test_unknown_jobs_and_results(server, method, path, status, fragment):
    with server.client() as client:
        response = client.request(method, path)
    assert response.status_code == status and fragment in response.json()["detail"]


def test_bad_last_event_id_and_unfinished_download(server, videos):
    with server.client() as client:
        response = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["dog60"].read_bytes(), "video/mp4")},
                               data={"prompts": GOOD, "engine": "slow"})
        job = response.json()
        bad = client.get(job["stream_url"], headers={"Last-Event-ID": "frame-seven"})
        early = client.get(f"{job['status_url']}/results/masks.zip")
        client.delete(job["status_url"])
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert early.status_code == 409 and "results exist only once it succeeded" in early.json()["detail"]


def test_real_job_id_with_a_suffix_is_refused(server, videos):
    """`/v1/jobs/<id>:frames` once reached Redis as the key of the job's stream (WRONGTYPE -> 503)."""
    with server.client() as client:
        job = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["dog"].read_bytes(), "video/mp4")},
                          data={"prompts": GOOD, "engine": "static"}).json()
        response = client.get(f"/v1/jobs/{job['id']}:frames")
    assert response.status_code == 422 and "job_id" in response.json()["detail"]


def test_rle_mask_prompt_runs_to_the_end(server, videos):
    """A valid RLE mask (decoded in column order) reached the engine as a Fortran array and failed the job."""
    mask = np.zeros((180, 320), bool)
    mask[80:135, 110:190] = True  # the dog's body in the first frame
    with server.client() as client:
        job = submit(client, videos["dog"], [{"object_id": 1, "mask": {"rle": encode_rle(mask)}}])
        status = wait_for(client, job["id"], finished, timeout=120)
    assert status["state"] == "succeeded", status


def test_inline_base64_mask_is_accepted(server, videos):
    prompt = [{"object_id": 1, "mask": {"png_base64": base64.b64encode(png_bytes(320, 180)).decode()}}]
    with server.client() as client:
        response = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["dog"].read_bytes(), "video/mp4")},
                               data={"prompts": json.dumps(prompt), "engine": "static"})
    assert response.status_code == 202, response.text
